#!/usr/bin/env bash
# A short run of every fuzz target, for CI: each target fuzzes a scratch
# copy of its committed seeds for FUZZ_SECONDS (default 20), so the
# targets keep building, every seed still passes, and a crash a few
# seconds of mutation finds fails the build. Long campaigns are run by
# hand (README, "Fuzzing"); nothing here grows fuzz/corpus.
#
# Installs what it needs when missing: a nightly toolchain and cargo-fuzz.
# A crash leaves its input in fuzz/artifacts/TARGET/; the script names it,
# goes on with the other targets, and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
cargo_fuzz_version=0.13.2

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "== installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

echo "== building the fuzz targets"
# As `--locked` would (cargo fuzz build has no such flag): a fuzz/Cargo.lock
# that no longer fits fuzz/Cargo.toml fails here, not silently updated.
cargo +nightly update --workspace --locked --manifest-path fuzz/Cargo.toml
start=$SECONDS
cargo +nightly fuzz build
echo "built in $((SECONDS - start)) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $(cargo +nightly fuzz list); do
    echo "== fuzzing $target for $seconds s"
    cp -R "fuzz/corpus/$target" "$scratch/$target"
    log="$scratch/$target.log"
    # -timeout: one input taking this long is a hang, and a failure.
    if cargo +nightly fuzz run "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+ +DONE' "$log" || true
    else
        tail -n 60 "$log"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "== every fuzz target ran $seconds s without a crash"
