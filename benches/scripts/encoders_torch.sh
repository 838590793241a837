#!/usr/bin/env bash
# PyTorch peer of the `encoders` bench: creates benches/.venv-torch (git-ignored) with torch, numpy and
# safetensors on first use (plus onnx, onnxscript and onnxruntime for the ONNX Runtime peer), then runs
# encoders_torch.py with the given arguments (JSON lines on stdout). JSEARCH_PEER_PYTHON=python3 skips the
# venv and runs that interpreter.
# PyPI's default torch wheel is used (it carries CUDA libraries, unused on a CPU machine).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# A Python that already has torch, numpy and safetensors (a GPU machine's own, which has no
# network to make the venv): used as is.
if [ -n "${JSEARCH_PEER_PYTHON:-}" ]; then
  exec "$JSEARCH_PEER_PYTHON" "$here/encoders_torch.py" "$@"
fi
venv="$here/../.venv-torch"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, numpy, safetensors" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch numpy safetensors >&2
fi
# The ONNX Runtime peer (--dtype onnx-float32 / onnx-int8): the exporter and the runtime.
case " $* " in
  *" onnx-"*)
    if ! "$venv/bin/python" -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
      "$venv/bin/pip" install --quiet --disable-pip-version-check onnx onnxscript onnxruntime >&2
    fi ;;
esac
exec "$venv/bin/python" "$here/encoders_torch.py" "$@"
