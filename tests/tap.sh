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
# tap_expect_error DESC STATUS SUBSTRING CMD...: passes when the command exits
# with STATUS and its stderr contains SUBSTRING, with no sanitizer report.
tap_expect_error() {
    desc=$1 want=$2 text=$3; shift 3
    err_file=$(mktemp)
    "$@" >/dev/null 2>"$err_file"
    got=$?
    if [ "$got" -eq "$want" ] && grep -qF -- "$text" "$err_file" && ! grep -q "Sanitizer\|runtime error" "$err_file"; then
        tap_ok "$desc"
    else
        tap_not_ok "$desc" "exit $got (want $want), stderr:" "$(head -c 600 "$err_file")"
    fi
    rm -f "$err_file"
}
# python_with MODULES: the first of /usr/bin/python3 and python3 that imports MODULES
# ("torch, numpy"), or nothing
python_with() {
    for p in /usr/bin/python3 python3; do
        if "$p" -c "import $1" >/dev/null 2>&1; then echo "$p"; return 0; fi
    done
}
# need_python MODULES: py, the first such python; without one the script is skipped (77)
need_python() {
    py=$(python_with "$1")
    [ -n "$py" ] || { echo "# no python3 with $1: skipped"; exit 77; }
}
# abspath PATH: PATH, made absolute against the working folder
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
# kernel_cache: the folder (created) that keeps NVRTC's and the emulator's
# compilations between runs, shared by the scripts that compile kernels
kernel_cache() {
    c=$(abspath "${EDMC_TEST_KERNEL_CACHE:-$builddir/tests/emu-cache}")
    mkdir -p "$c" && echo "$c"
}
# strace_usable: strace is installed and may trace here (containers can forbid ptrace)
strace_usable() { command -v strace >/dev/null 2>&1 && strace -f -o /dev/null true 2>/dev/null; }
# traced_opens LOG COMMAND...: COMMAND under strace, its open/openat calls in
# LOG; without LeakSanitizer, which cannot run under ptrace (CI's sanitizer
# pass): every other run of the binary still checks leaks
traced_opens() {
    trace_log=$1; shift
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -e trace=open,openat -o "$trace_log" "$@"
}
