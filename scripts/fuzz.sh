#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (issue 9; see fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60 (CI uses ~10); TARGET defaults to all of fuzz/fuzz_targets/.
# Each target starts from the corpus in fuzz/corpus/<target> (kept between runs, not committed)
# seeded with every file of fuzz/regressions/*/. Exits non-zero on any crash, panic, timeout or
# out-of-memory, and says where the crashing input was written and how to keep it as a regression
# test. Prints libFuzzer's execution counts per target at the end.
#
# Environment:
#   FUZZ_TOOLCHAIN   stable (default: nightly flags through RUSTC_BOOTSTRAP=1) or nightly
#   FUZZ_SANITIZER   none (default: atp-wasm is safe Rust, and ASan halves the speed) or address, …
#   FUZZ_MAX_LEN     largest input libFuzzer generates, in bytes (default 16384)
#   CARGO_TARGET_DIR when set, the fuzz build goes to $CARGO_TARGET_DIR/fuzz (default fuzz/target)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

seconds=${1:-60}
[[ $# -gt 0 ]] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

all_targets=()
for f in fuzz/fuzz_targets/*.rs; do
    all_targets+=("$(basename "$f" .rs)")
done
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    if [[ ! -f fuzz/fuzz_targets/$t.rs ]]; then
        echo "unknown fuzz target '$t' (have: ${all_targets[*]})" >&2
        exit 2
    fi
done

toolchain=${FUZZ_TOOLCHAIN:-stable}
sanitizer=${FUZZ_SANITIZER:-none}
max_len=${FUZZ_MAX_LEN:-16384}
case $toolchain in
    stable) export RUSTC_BOOTSTRAP=1 ;; # cargo fuzz passes -Z flags (sanitizer coverage) to rustc
    nightly) ;;
    *) echo "FUZZ_TOOLCHAIN must be stable or nightly, not '$toolchain'" >&2; exit 2 ;;
esac
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "rustup toolchain '$toolchain' is not installed" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [[ -n ${CARGO_TARGET_DIR:-} ]]; then target_dir=$CARGO_TARGET_DIR/fuzz; else target_dir=$root/fuzz/target; fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "== building ${targets[*]} (toolchain $toolchain, sanitizer $sanitizer, target dir $target_dir)"
build_start=$(date +%s)
for t in "${targets[@]}"; do
    cargo "+$toolchain" fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir" "$t"
done
echo "== built in $(( $(date +%s) - build_start )) s"

failed=()
summary=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    echo "== fuzzing $t for ${seconds}s (corpus $corpus, seeds fuzz/regressions/*)"
    log=$logs/$t.log
    status=0
    # Every target is seeded with all regression inputs: a message is also a JSON document, a
    # record may sit in a TXT answer, and so on.
    cargo "+$toolchain" fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" "$t" \
        "$corpus" fuzz/regressions/*/ -- \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 \
        -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{s+=$2} END {print s+0}')
    rate=$(grep -E '^stat::average_exec_per_sec:' "$log" | awk '{s+=$2} END {print s+0}')
    cov=$(grep -Eo '#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)[[:space:]]+cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 |
        grep -Eo 'cov: [0-9]+ ft: [0-9]+' || true)
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        summary+=("$(printf '%-14s FAILED after %s execs' "$t" "$execs")")
        echo "!! $t failed (exit $status). libFuzzer's report:"
        grep -E -A25 'panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|==[0-9]+==ERROR|deadly signal|timeout' "$log" |
            head -60 || tail -40 "$log"
        artifact=$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //')
        if [[ -n $artifact ]]; then
            echo "!! the crashing input was written to $artifact"
            echo "   reproduce:  cargo +$toolchain fuzz run --sanitizer $sanitizer $t $artifact"
            echo "   minimise:   cargo +$toolchain fuzz tmin --sanitizer $sanitizer $t $artifact"
            echo "   keep it:    cp $artifact fuzz/regressions/$t/<what-it-is>  (then fix atp-wasm; the input is"
            echo "               replayed by: cargo test -p atp-wasm --test fuzz_regressions)"
        fi
    else
        summary+=("$(printf '%-14s ok  %10s execs  %7s exec/s  %s' "$t" "$execs" "$rate" "$cov")")
    fi
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "!! failing targets: ${failed[*]}"
    exit 1
fi
