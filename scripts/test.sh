#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#   ./scripts/test.sh
# Needs only the Rust toolchain; it installs nothing else yet.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting"
cargo fmt --all --check

step "lints (all targets, and the shuttle builds)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p sesa-ebb -p sesa-hosted --features sesa-ebb/shuttle,sesa-hosted/shuttle \
    --all-targets --locked -- -D warnings

step "docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "the portable crates build without std"
cargo build -p sesa-ebb -p sesa-event -p sesa-wire -p sesa-exec --locked --quiet

step "tests"
cargo test --workspace --locked

step "concurrency checks under shuttle (randomized schedules)"
cargo test -p sesa-ebb --features shuttle --test shuttle_ebb --locked
cargo test -p sesa-hosted --features shuttle --test shuttle_inbox --locked
