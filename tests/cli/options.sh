#!/bin/sh
# The command line: every command's --help (and `edmc help CMD`) from its
# option table, `--opt value` beside `--opt=value`, "did you mean", the
# reference's spellings, `train --dry-run`, PH-EMA's list forms.
. "$srcdir/tests/tap.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
edmc="$builddir/edmc" tiny="$srcdir/models/edm2-tiny.edm" small="-D model_channels=16 -D channels_per_head=16"

# --- help, per command, with defaults
for c in check info dump init forward bench step train phema generate; do
    if "$edmc" "$c" --help >"$tmp/h" 2>&1 && grep -q "^usage: edmc $c" "$tmp/h" && grep -q -- "--help, -h" "$tmp/h"; then
        tap_ok "edmc $c --help"
    else
        tap_not_ok "edmc $c --help" "$(head -n 3 "$tmp/h")"
    fi
done
"$edmc" help train >"$tmp/h1" 2>&1
"$edmc" train --help >"$tmp/h2" 2>&1
if cmp -s "$tmp/h1" "$tmp/h2" && grep -q -- "--duration=N *images in all (default: the model.s duration_Mi, 2Gi)" "$tmp/h1"; then
    tap_ok "edmc help train is train's help, with the defaults"
else
    tap_not_ok "edmc help train" "$(head -n 5 "$tmp/h1")"
fi
grep -q -- "--sampler=heun|euler|dpmpp-2m .*(default: heun)" "$tmp/h" 2>/dev/null || "$edmc" generate --help >"$tmp/h"
if grep -q -- "--sampler=heun|euler|dpmpp-2m .*(default: heun)" "$tmp/h" && grep -q -- "--sigma-min=X .*also: --sigma_min" "$tmp/h"; then
    tap_ok "generate's help lists the samplers and the reference's spellings"
else
    tap_not_ok "generate's help" "$(grep -- "--s" "$tmp/h")"
fi
tap_expect_error "help for a command that does not exist" 2 "unknown command 'trian'" "$edmc" help trian

# --- did you mean, --opt value
tap_expect_error "a misspelt train option" 2 "unknown option '--duraton' (did you mean '--duration'?)" \
    "$edmc" train --duraton=5
tap_expect_error "a misspelt generate option" 2 "(did you mean '--guidance'?)" "$edmc" generate --guidanse=2
tap_expect_error "a misspelt info option" 2 "(did you mean '--json'?)" "$edmc" info "$tiny" --jsno
tap_expect_error "a flag given a value" 2 "--resume takes no value" "$edmc" train --resume=yes
tap_expect_error "a value missing at the end" 2 "--outdir needs a value" "$edmc" train --outdir
tap_check "--opt value (info)" "$edmc" info --fuse none "$tiny"
tap_check "train --preset edm2-tiny (value as the next argument)" env EDMC_MODELS="$srcdir/models" "$edmc" train \
    --preset edm2-tiny $small --data builtin:shapes --outdir "$tmp/p" --batch 8 --duration 16 --status 16 --snapshot 0 \
    --threads 1

# --- train --dry-run: the resolved configuration and the plan, nothing written
"$edmc" train -n --model="$tiny" --channels 16 -D channels_per_head=16 --data=builtin:shapes --outdir="$tmp/dry" \
    --batch=16 --batch-gpu=8 --duration=4Ki --snapshot=1000 --rampup=0 >"$tmp/dry.txt" 2>&1
status=$?
if [ "$status" -eq 0 ] && [ ! -e "$tmp/dry" ] && grep -q "model_channels=16" "$tmp/dry.txt" &&
    grep -q "16 images per step, 8 per pass (2 passes)" "$tmp/dry.txt" && grep -q "256 steps to go" "$tmp/dry.txt" &&
    grep -q "every 1000 images: 4 x 2 files" "$tmp/dry.txt"; then
    tap_ok "train -n prints the plan (--channels as -D model_channels) and writes nothing"
else
    tap_not_ok "train -n: exit $status" "$(cat "$tmp/dry.txt")"
fi
"$edmc" train --dry-run --resume --outdir="$tmp/p" --duration=32 >"$tmp/dry2.txt" 2>&1
if grep -q "resumes from .*training-state-000000000016.safetensors (kimg 0.016)" "$tmp/dry2.txt" &&
    grep -q "2 steps to go" "$tmp/dry2.txt"; then
    tap_ok "train --dry-run --resume names the checkpoint it would continue"
else
    tap_not_ok "train --dry-run --resume" "$(cat "$tmp/dry2.txt")"
fi
"$edmc" train -n --model="$tiny" --cond=false --P_mean=-0.8 --dropout 0.1 --data=builtin:shapes --outdir="$tmp/dry" \
    >"$tmp/dry3.txt" 2>&1
if grep -q "label_dim=0" "$tmp/dry3.txt" && grep -q "dropout=0.1" "$tmp/dry3.txt" && grep -q "P_mean=-0.8" "$tmp/dry3.txt"; then
    tap_ok "the reference's --cond, --P_mean and --dropout set the model's parameters"
else
    tap_not_ok "--cond/--P_mean/--dropout" "$(cat "$tmp/dry3.txt")"
fi
tap_expect_error "--cond takes true or false" 2 "--cond=maybe: expected true or false" \
    "$edmc" train -n --model="$tiny" --cond=maybe --data=builtin:shapes --outdir="$tmp/dry"

# --- generate: the reference's spellings
"$edmc" init "$tiny" $small -D img_channels=3 -o "$tmp/w.safetensors" >/dev/null 2>&1
gen() { "$edmc" generate --net="$tmp/w.safetensors" --seeds=0-1 --steps=2 --threads=1 "$@"; }
gen --outdir="$tmp/g1" --sigma-min=0.01 --S-churn=1 --S-noise=1.003 >/dev/null 2>&1
tap_check "--sigma_min/--S_churn/--S_noise (the reference's names)" gen --outdir "$tmp/g2" --sigma_min 0.01 \
    --S_churn=1 --S_noise=1.003
if cmp -s "$tmp/g1/seed000000.png" "$tmp/g2/seed000000.png"; then tap_ok "and they mean the same as edmc's"
else tap_not_ok "--sigma_min and --sigma-min differ"; fi
tap_check "--gnet is --guide" gen --outdir="$tmp/g3" --gnet="$tmp/w.safetensors" --guidance=1.5
tap_check "--names=reference --subdirs" gen --outdir="$tmp/g4" --names=reference --subdirs
if [ -f "$tmp/g4/000000/000001.png" ]; then tap_ok "NNNNNN.png in a folder per thousand seeds"
else tap_not_ok "no $tmp/g4/000000/000001.png" "$(find "$tmp/g4" | head)"; fi
tap_check "generate --preset" env EDMC_MODELS="$srcdir/models" "$edmc" generate --preset=edm2-tiny \
    --net="$tmp/w.safetensors" $small -D img_channels=3 --seeds=0 --steps=2 --outdir="$tmp/g5"
tap_expect_error "one model only" 2 "give the model once" gen --outdir="$tmp/g6" --preset=edm2-tiny --model="$tiny"

# --- phema: the list form, --outprefix, --skip, --inprefix
"$edmc" train --model="$tiny" $small --data=builtin:shapes --batch=8 --rampup=0 --threads=1 --outdir="$tmp/r" \
    --duration=2000 --status=1000 --snapshot=1000 >/dev/null 2>&1
tap_check "phema --outstd=0.050,0.060,...,0.080 --outprefix=ph" "$edmc" phema --indir="$tmp/r" \
    --outstd=0.050,0.060,...,0.080 --outprefix=ph --outdir="$tmp/ph"
n=$(ls "$tmp/ph"/ph-0000002-*.safetensors 2>/dev/null | wc -l)
if [ "$n" -eq 4 ] && [ -f "$tmp/ph/ph-0000002-0.070.safetensors" ]; then tap_ok "four results named ph-*"
else tap_not_ok "$n results" "$(ls "$tmp/ph")"; fi
"$edmc" phema --indir="$tmp/r" --outstd=0.050,0.060,...,0.080 --outprefix=ph --outdir="$tmp/ph" --skip >"$tmp/skip.txt" 2>&1
if [ "$(grep -c "^kept" "$tmp/skip.txt")" -eq 4 ]; then tap_ok "--skip keeps what is there"
else tap_not_ok "--skip" "$(cat "$tmp/skip.txt")"; fi
tap_expect_error "--inprefix that matches nothing" 1 "expected snap-<kimg>-<sigma_rel>.safetensors" \
    "$edmc" phema --indir="$tmp/r" --outstd=0.05 --outdir="$tmp/ph" --inprefix=snap
tap_expect_error "a list form without two values before the dots" 2 "'...' needs two rising values" \
    "$edmc" phema --indir="$tmp/r" --outstd=0.05,...,0.1 --outdir="$tmp/ph"
tap_done
