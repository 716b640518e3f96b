# Shell helpers for TAP-producing test scripts: ok/not ok lines that
# tests/run-all.sh counts.  Source it; call tap_done at the end.
tap_n=0
tap_failed=0
tap_ok() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $1"; }
tap_not_ok() {
    tap_n=$((tap_n + 1)); tap_failed=$((tap_failed + 1)); echo "not ok $tap_n - $1"
    shift
    for line in "$@"; do printf '#   %s\n' "$line"; done
}
# tap_check DESCRIPTION COMMAND...: passes when the command exits 0
tap_check() {
    desc=$1; shift
    if out=$("$@" 2>&1); then tap_ok "$desc"; else tap_not_ok "$desc" "$(printf '%s' "$out" | head -n 20)"; fi
}
tap_done() { echo "1..$tap_n"; [ "$tap_failed" -eq 0 ]; }
