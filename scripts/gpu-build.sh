#!/usr/bin/env bash
# Builds, here (no GPU or CUDA toolkit needed), what scripts/gpu-check.sh runs on a GPU machine:
# the CUDA build of `jsearch` and of the `parity`, `encoders` and `ingest` benches, stripped, into
# .gpu/bin (git-ignored), with .gpu/bin/BUILD_INFO naming the commit, and the same packed into
# .gpu/bin.tar.xz: four ~60 MB binaries that share candle's PTX kernels pack into ~13 MB with a
# 256 MiB xz dictionary. The device tool carries only the archive, `carry: [".gpu/bin.tar.xz"]`
# (a call carries at most 64 MiB with the working tree; this checks the size).
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
du -ch .gpu/bin/* | tail -n 1
tar -C .gpu -cf - bin | xz -T1 --lzma2=preset=6,dict=256MiB -c >.gpu/bin.tar.xz.tmp
mv .gpu/bin.tar.xz.tmp .gpu/bin.tar.xz
size=$(du -m .gpu/bin.tar.xz | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cm 2>/dev/null | tail -n 1 | cut -f1)
echo "gpu-build: .gpu/bin.tar.xz is ${size} MiB; with the working tree (${tree} MiB) a device call carries $((size + tree)) MiB of 64"
if [ $((size + tree)) -ge 60 ]; then
    echo "gpu-build: too close to the 64 MiB a device call carries" >&2
    exit 1
fi
