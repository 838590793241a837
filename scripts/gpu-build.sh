#!/usr/bin/env bash
# Builds, here (no GPU or CUDA toolkit needed), what scripts/gpu-check.sh runs on a GPU machine:
# the CUDA build of `jsearch` and of the `parity`, `encoders` and `ingest` benches, stripped, into
# .gpu/bin (git-ignored), with .gpu/bin/BUILD_INFO naming the commit. The device tool carries it
# with `carry: [".gpu"]` (it must stay under the 64 MiB a call may carry; this prints the size).
#
#     scripts/gpu-build.sh        # first run: ~1.3 GB of CUDA wheels (scripts/cuda-env.sh), ~25 min on 2 cores
#
# CUDA_COMPUTE_CAP (default 90: H100/H200) picks the GPU generation the kernels are built for.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
export CARGO_TARGET_DIR="$PWD/target/cuda"
cargo build --release --locked -p jsearch-cli --features cuda
cargo build --release --locked -p jsearch-benches --features cuda --bin parity --bin encoders --bin ingest
rm -rf .gpu/bin
mkdir -p .gpu/bin
for b in jsearch parity encoders ingest; do
    cp "$CARGO_TARGET_DIR/release/$b" .gpu/bin/
    strip .gpu/bin/$b
done
{
    echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!.gpu' || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%Y-%m-%dT%H:%MZ) with CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, $(nvcc --version | tail -n 2 | head -n 1)"
    echo "features cuda; CUDA libraries loaded at run time (vendor/cudarc/README.jsearch.md)"
} >.gpu/bin/BUILD_INFO
cat .gpu/bin/BUILD_INFO
du -ch .gpu/bin/* | tail -n 5
total=$(du -cm .gpu | tail -n 1 | cut -f1)
if [ "$total" -ge 60 ]; then
    echo "gpu-build: .gpu is ${total} MiB, too close to the 64 MiB a device call carries" >&2
    exit 1
fi
