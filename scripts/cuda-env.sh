#!/usr/bin/env bash
# Sets up a CUDA 13 build environment WITHOUT a GPU or a system CUDA toolkit, from pip wheels, so that
# `cargo build --features cuda` compiles and links on any x86-64 Linux machine with Python 3.
#
# Usage (source it, so that the exports stay in your shell):
#     source scripts/cuda-env.sh            # first run downloads ~1.3 GB of wheels into .cuda/
#     cargo build --release -p jsearch-cli --features cuda
#
# What it does (see README "CUDA"):
#   1. a venv in .cuda/venv with the pinned NVIDIA wheels (nvcc, nvvm, crt, runtime, cccl, nvrtc, cublas, curand);
#      nvidia-nvvm is pinned: a newer one emits PTX ISA 9.5, which the 13.0 assembler and driver 580 reject;
#   2. a CUDA root (.cuda/root) made of links to the wheels: bin/, include/, nvvm/, lib64/ with the unversioned
#      .so names the linker looks for;
#   3. CUDA_ROOT/CUDA_PATH/PATH/CUDA_COMPUTE_CAP (default 90 = H100/H200; override before sourcing).
#
# The binary links no CUDA library: the driver (libcuda.so.1), libcublas.so.13, libcublasLt.so.13 and
# libcurand.so.10 are opened at run time (vendor/cudarc), so it starts on machines without them and
# uses the GPU where they are found (LD_LIBRARY_PATH, e.g. PyTorch's site-packages/nvidia/cu13/lib).

_jsearch_cuda_main() {
    set -e
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local base="$repo/.cuda"
    local venv="$base/venv"
    local root="$base/root"
    local py="${PYTHON:-python3}"

    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv"
    fi
    if [ ! -f "$venv/.installed" ]; then
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
            nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
        touch "$venv/.installed"
    fi

    local cu
    cu="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
    [ -d "$cu" ] || { echo "cuda-env: no $cu after pip install" >&2; return 1; }

    mkdir -p "$root/lib64"
    for d in bin include nvvm; do ln -sfn "$cu/$d" "$root/$d"; done
    local lib
    for lib in cudart cublas cublasLt curand nvrtc; do
        local real
        real="$(ls "$cu"/lib/lib$lib.so.* 2>/dev/null | sort | head -n 1)"
        [ -n "$real" ] || { echo "cuda-env: lib$lib.so.* not found under $cu/lib" >&2; return 1; }
        ln -sfn "$real" "$root/lib64/lib$lib.so"
        ln -sfn "$real" "$root/lib64/$(basename "$real")"
    done
    # The static CUDA runtime: candle-kernels' MoE kernels call it, and linked statically it
    # keeps the binary free of CUDA libraries at load time (vendor/cudarc/build.rs).
    ln -sfn "$cu/lib/libcudart_static.a" "$root/lib64/libcudart_static.a"


    export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
    export PATH="$root/bin:$PATH"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
    echo "cuda-env: CUDA_ROOT=$root CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP ($(nvcc --version | tail -n 2 | head -n 1))"
}

_jsearch_cuda_main
_jsearch_cuda_rc=$?
set +e
unset -f _jsearch_cuda_main
# shellcheck disable=SC2317
return $_jsearch_cuda_rc 2>/dev/null || exit $_jsearch_cuda_rc
