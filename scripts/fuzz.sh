#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of bytes from outside (fuzz/), each target
# for SECONDS (default 30), starting from the committed corpus (fuzz/corpus/<target>).
#   ./scripts/fuzz.sh [SECONDS]
# New inputs the fuzzer finds go to fuzz/target/new-corpus/<target> (not committed, so a
# test run leaves the tree clean); to keep some, copy them into fuzz/corpus/<target> and
# minimise it: cargo +nightly fuzz cmin <target>
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers); installs cargo-fuzz
# from crates.io when missing. A crash is saved under fuzz/artifacts/<target>/ and
# replays with: cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain list): cargo-fuzz needs one" >&2
    exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in $(cargo +nightly fuzz list); do
    echo "==> fuzzing $target for ${seconds}s"
    mkdir -p "target/new-corpus/$target"
    # libFuzzer writes new inputs to the first corpus directory, reads all of them.
    cargo +nightly fuzz run -O "$target" "target/new-corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units|SUMMARY|==[0-9]+==ERROR)|panicked' || true
    # libFuzzer exits non-zero on a crash; the pipe above hides that, so check here.
    if compgen -G "artifacts/$target/*" >/dev/null; then
        echo "fuzz.sh: $target crashed; inputs in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
