#!/usr/bin/env bash
# hnswlib peer of the `ann` bench: creates benches/.venv (git-ignored) with hnswlib + numpy on first use,
# then runs ann_hnswlib.py with the given arguments (JSON lines on stdout).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import hnswlib, numpy" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet hnswlib numpy >&2
fi
exec "$venv/bin/python" "$here/ann_hnswlib.py" "$@"
