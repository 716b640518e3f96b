#!/bin/sh
# Runs every test program and script (each prints TAP), shows failures, and
# ends with one line "N passed, N failed".  Exit status 1 when anything failed.
# Called by `make check` with $srcdir and $builddir set.
set -u
srcdir=${srcdir:-.}
builddir=${builddir:-.}
export srcdir builddir
export CMOCKA_MESSAGE_OUTPUT=TAP
log_dir="$builddir/tests/logs"
mkdir -p "$log_dir"
passed=0
failed=0
skipped=0

run_one() { # name command...
    name=$1; shift
    log="$log_dir/$(echo "$name" | tr '/ ' '__').log"
    "$@" >"$log" 2>&1
    status=$?
    ok=$(grep -c '^ok ' "$log")
    bad=$(grep -c '^not ok ' "$log")
    if [ "$status" -eq 77 ]; then
        skipped=$((skipped + 1)); echo "SKIP: $name"; return
    fi
    if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1  # crashed or failed without saying which case
        echo "FAIL: $name exited with status $status"; tail -n 15 "$log" | sed 's/^/    /'
    fi
    if [ "$bad" -gt 0 ]; then
        echo "FAIL: $name ($bad failed)"
        grep -A8 '^not ok ' "$log" | head -n 60 | sed 's/^/    /'
    else
        echo "PASS: $name ($ok)"
    fi
    passed=$((passed + ok)); failed=$((failed + bad))
}

for t in tests/unit/test_ir tests/unit/test_stats tests/unit/test_frontend tests/unit/test_safetensors \
         tests/unit/test_backend_cpu tests/unit/test_golden_forward tests/unit/test_sample tests/unit/test_phema tests/unit/test_grad_buckets tests/unit/test_autodiff \
         tests/unit/test_train_step tests/unit/test_data tests/unit/test_cuda_codegen tests/unit/test_backend_ops \
         tests/unit/test_cuda_gemm tests/unit/test_fuse tests/unit/test_cuda_fused tests/unit/test_cuda_split tests/unit/test_pickle tests/unit/test_convert; do
    run_one "$t" "$builddir/$t"
done
run_one tests/fuzz/corpus "$builddir/tests/fuzz/fuzz_parser_replay" "$srcdir/tests/fuzz/corpus"
run_one tests/fuzz/st_corpus "$builddir/tests/fuzz/fuzz_safetensors_replay" "$srcdir/tests/fuzz/st_corpus"
run_one tests/fuzz/data_corpus "$builddir/tests/fuzz/fuzz_dataset_replay" "$srcdir/tests/fuzz/data_corpus"
run_one tests/fuzz/pkl_corpus "$builddir/tests/fuzz/fuzz_pickle_replay" "$srcdir/tests/fuzz/pkl_corpus"
run_one tests/fuzz/pkg_corpus "$builddir/tests/fuzz/fuzz_package_replay" "$srcdir/tests/fuzz/pkg_corpus"
for s in "$srcdir"/tests/cli/*.sh; do
    run_one "tests/cli/$(basename "$s")" sh "$s"
done

[ "$skipped" -gt 0 ] && echo "($skipped suites skipped)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
