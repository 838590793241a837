#!/usr/bin/env bash
# Offline demo on the bundled toy model and corpus: builds jsearch (release), indexes the toy images,
# the product catalog and a text note into a temporary store, then queries in several languages,
# by image, and shows incremental re-indexing. Needs only a Rust toolchain. Uses the real jina-clip-v2
# when it is present, else (offline) the bundled toy model.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
cargo build --release -p jsearch-cli
BIN="$PWD/target/release/jsearch"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export JSEARCH_DB="$TMP/toy.jsearch"
# The real jina-clip-v2 when one is present ($JSEARCH_MODEL or the Hugging Face cache), else the toy model.
if [ -z "${JSEARCH_MODEL:-}" ]; then
    snap="$(ls -d "${HF_HOME:-$HOME/.cache/huggingface}"/hub/models--jinaai--jina-clip-v2/snapshots/*/ 2>/dev/null | head -n 1 || true)"
    if [ -n "$snap" ] && [ -f "$snap/model.safetensors" ]; then
        JSEARCH_MODEL="$snap"
    else
        JSEARCH_MODEL="$PWD/datasets/toy-shapes/model"
    fi
fi
export JSEARCH_MODEL
echo "model: $JSEARCH_MODEL"
CORPUS="$PWD/datasets/toy-shapes/corpus"
mkdir -p "$TMP/notes"
printf '# Roter Kreis\n\nEin roter Kreis auf einfarbigem Hintergrund.\n' > "$TMP/notes/rot.md"

run() { echo; echo "\$ jsearch $*"; "$BIN" "$@"; }

run index "$CORPUS/images" "$CORPUS/products.jsonl" "$TMP/notes"
run query "roter Kreis" -k 5                     # German
run query "a yellow star" -k 5 --type image      # English, images only
run query "红色圆形" -k 3                          # Chinese
run query "синее сердце" -k 3 --type product     # Russian, products only
run query "une étoile jaune" -k 3 --json         # French, JSON lines
run query --image "$CORPUS/images/img_027.jpg" -k 3 --type image
run query --image "$CORPUS/images/img_037.png" --text "roter Stern" -k 3 --type image
run similar "$CORPUS/images/img_027.jpg" -k 3
run query "roter Kreis" -k 3 --paths
# Scores are the probability of being relevant: a query about nothing in the store finds nothing
# (exit status 1, as grep and rg), --all shows the best hits anyway.
run query "quarterly tax report 2023" || echo "(exit status $?: nothing relevant)"
run query "quarterly tax report 2023" -k 2 --all
run stats
run index "$CORPUS/images" "$CORPUS/products.jsonl" "$TMP/notes"   # incremental: nothing to do
