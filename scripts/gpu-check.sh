#!/usr/bin/env bash
# The GPU check of issue #17, as ONE command for a lent GPU machine (about 5 minutes on an H100):
#
#   1. parity: the fixture model's f32 outputs on the GPU within 1e-4 of the official ones, bf16
#      within cosine 0.999 of f32 on every fixture and toy-model input (`parity` bench);
#   2. throughput at the real size (random weights, official layout, generated there): images/s at
#      512 px for batches 1, 8, 32, 64, text queries/s (batch 1 and 64), 512-token passages/s,
#      load time, peak GPU memory (`encoders` bench, jsearch f32 and bf16);
#   3. PyTorch on the same GPU in the same run (the bench's encoders_torch.py peer: the official
#      architecture sizes, float32 and bfloat16, scaled_dot_product_attention), with ratios;
#   4. end-to-end `jsearch index` of generated 12-megapixel JPEGs (`ingest` bench, bf16, batch 64;
#      full decode and the reduced-DCT decode), items/s and the share of time the GPU waits.
#
# It writes 8 files (what the device tool brings back) into the output folder ($OUT; else ./gpu-out):
# summary.md (every table, the targets, met or not), parity.md, parity.json, encoders.md,
# rows.jsonl (every system's raw rows), ingest-exact.md, ingest-fast.md and gpu-check.log.
#
# On the GPU machine (binaries built here by scripts/gpu-build.sh, carried as .gpu/bin.tar.xz):
#     scripts/gpu-check.sh                       # unpacks them, uses the machine's python3 (torch)
# Here, without a GPU, to test the script itself (CPU device, the tiny fixture model, small photos;
# release binaries built here, the PyTorch peer from benches/.venv-torch):
#     scripts/gpu-check.sh --no-gpu
# Exit status: 0 when every step ran and parity holds; 1 otherwise. Speed targets are reported in
# summary.md as met or not (they are the issue's targets, not the script's health).
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

mode=gpu
bin=""
out="${OUT:-$repo/gpu-out}"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-gpu) mode=cpu ;;
        --bin) bin="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (--no-gpu, --bin DIR, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
work="$(mktemp -d "${TMPDIR:-/tmp}/jsearch-gpu-check.XXXXXX")"
export JSEARCH_REPO="$repo" TMPDIR="$work"
log="$out/gpu-check.log"
: >"$log"
say() { echo "== $*" | tee -a "$log" >&2; }
failed=()

if [ "$mode" = gpu ]; then
    if [ -z "$bin" ] && [ ! -x "$repo/.gpu/bin/jsearch" ] && [ -f "$repo/.gpu/bin.tar.xz" ]; then
        # What scripts/gpu-build.sh packed (Python's tarfile reads xz without the xz tool).
        say "unpacking .gpu/bin.tar.xz"
        python3 -c 'import sys, tarfile; t = tarfile.open(sys.argv[1]); t.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' \
            "$repo/.gpu/bin.tar.xz" "$work" || { echo "gpu-check: cannot unpack .gpu/bin.tar.xz" >&2; exit 1; }
        bin="$work/bin"
    fi
    bin="${bin:-$repo/.gpu/bin}"
    device=cuda
    export JSEARCH_PEER_PYTHON="${JSEARCH_PEER_PYTHON:-python3}"
    # cuBLAS, cuBLASLt, cuRAND of the machine's PyTorch (the binary opens them at run time).
    nvlibs="$("$JSEARCH_PEER_PYTHON" -c 'import nvidia, glob, os; print(":".join(sorted(d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib")))))' 2>/dev/null)"
    export LD_LIBRARY_PATH="${nvlibs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    ckpt_args=()                                   # the real-size random checkpoint
    enc_args=(--dtypes f32,bf16 --peer-dtypes float32,bfloat16 --speed-vs "pytorch bfloat16"
              --image-batch 1,8,32,64 --query-batch 64 --passage-batch 16 --iters 5)
    ingest_model=real
    ingest_args=(--photos 512 --batch-size 64 --precision bf16)
    e2e_case=images_64x512
    decode_cosine=64
else
    device=cpu
    if [ -z "$bin" ]; then
        say "building release binaries (no CUDA) for --no-gpu"
        cargo build --release --locked -q -p jsearch-cli -p jsearch-benches \
            --bin jsearch --bin parity --bin encoders --bin ingest >>"$log" 2>&1 || { echo "build failed: $log" >&2; exit 1; }
        bin="$repo/target/release"
    fi
    ckpt_args=(--checkpoint "$repo/datasets/jina-clip-v2-tiny/model")
    enc_args=(--dtypes f32,bf16 --peer-dtypes float32,bfloat16 --speed-vs "pytorch bfloat16"
              --image-batch 1,8 --query-batch 8 --passage-batch 2 --iters 3 --threads 2)
    ingest_model="$repo/datasets/jina-clip-v2-tiny/model"
    ingest_args=(--photos 16 --width 1600 --height 1200 --batch-size 8 --precision bf16)
    e2e_case=images_8x56
    decode_cosine=8
fi
for b in parity encoders ingest; do
    [ -x "$bin/$b" ] || { echo "gpu-check: $bin/$b missing (scripts/gpu-build.sh builds it)" >&2; exit 1; }
done

{
    echo "# gpu-check ($mode mode), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    [ -f "$bin/BUILD_INFO" ] && sed 's/^/- build: /' "$bin/BUILD_INFO"
    if [ "$mode" = gpu ]; then
        echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)"
        echo "- PyTorch: $("$JSEARCH_PEER_PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -n 1)"
    fi
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
} >"$work/machine.md"
tee -a "$log" <"$work/machine.md" >&2

# A step: its name, a time limit, then the command; stdout to $out/NAME.md, stderr to the log.
step() {
    local name="$1" limit="$2"
    shift 2
    say "$name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.md" 2>>"$log"
    local rc=$?
    say "$name: exit $rc after $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || failed+=("$name (exit $rc)")
    return $rc
}

step parity 180 "$bin/parity" --device "$device" --json "$out/parity.json"
step encoders 360 "$bin/encoders" --device "$device" "${ckpt_args[@]}" --work "$work/enc" "${enc_args[@]}"
# Every system's raw rows in one file (the device tool brings back at most 8 files).
for f in "$work"/enc/rows-*.jsonl; do
    [ -f "$f" ] || continue
    sys="$(basename "$f" .jsonl)"
    sed "s/^{/{\"system\": \"${sys#rows-}\", /" "$f"
done >"$out/rows.jsonl"
ingest() {
    local name="$1"
    shift
    step "$name" 240 "$bin/ingest" --model "$ingest_model" --device "$device" "${ingest_args[@]}" "$@"
}
ingest ingest-exact --exact-jpeg
ingest ingest-fast --fast-jpeg --decode-cosine "$decode_cosine"

python3 - "$out" "$mode" "$e2e_case" "$work" "${failed[@]}" <<'EOF' | tee "$out/summary.md"
import json, os, sys
out, mode, e2e_case, work, failed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]

def read(name):
    p = os.path.join(out, name)
    return open(p).read() if os.path.exists(p) else ""

def rows(system):
    r = {}
    for line in read("rows.jsonl").splitlines():
        try:
            v = json.loads(line)
            if v.get("system") == system.replace(" ", "-"):
                r[v["case"]] = v
        except (ValueError, KeyError):
            pass
    return r

def last_json(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None

print(open(os.path.join(work, "machine.md")).read())
print("## 1. Parity\n" + read("parity.md").strip() + "\n")
print("## 2-3. Encoders vs PyTorch on the same device\n" + read("encoders.md").strip() + "\n")
targets = []
par = json.loads(read("parity.json") or "{}").get("rows", [])
f32_rows = [r for r in par if "f32" in r["check"] and "official" in r["check"] and "raw" in r["check"]]
bf16_rows = [r for r in par if "bf16" in r["check"]]
if f32_rows:
    worst = max(r["value"] for r in f32_rows)
    targets.append(("f32 parity with the official outputs ≤ 1e-4", f"{worst:.2e}", worst <= 1e-4))
if bf16_rows:
    worst = min(r["value"] for r in bf16_rows)
    targets.append(("bf16 cosine to f32 ≥ 0.999 on every input", f"{worst:.6f}", worst >= 0.999))
js, pt = rows("jsearch bf16"), rows("pytorch bfloat16")
big = e2e_case
if big in js and big in pt:
    r = js[big]["per_s"] / pt[big]["per_s"]
    targets.append((f"{big}: jsearch bf16 images/s ≥ PyTorch bf16 + SDPA", f"{js[big]['per_s']:.1f} vs {pt[big]['per_s']:.1f} images/s ({r:.2f}x)", r >= 1.0))
print("## 4. End-to-end `jsearch index` of generated photos\n")
print("| decode | photos | items/s | GPU (encoder) waits | encoder-only rate | end-to-end / encoder-only |")
print("|---|---|---|---|---|---|")
enc_rate = js.get(big, {}).get("per_s")
decode_note = None
for name, label in (("ingest-exact", "full"), ("ingest-fast", "reduced DCT (`--fast-jpeg`)")):
    v = last_json(read(f"{name}.md"))
    if not v:
        print(f"| {label} | - | - | - | - | (no result) |")
        continue
    s = v["summary"]
    wait = s["times"]["wait"] / max(s["elapsed"], 1e-9)
    ips = v["items_per_s"]
    ratio = ips / enc_rate if enc_rate else None
    print(f"| {label} | {v['photos']} | {ips:.1f} | {100 * wait:.0f} % | {enc_rate or float('nan'):.1f} | {'-' if ratio is None else f'{100 * ratio:.0f} %'} |")
    if ratio is not None:
        targets.append((f"end-to-end indexing ({label} decode) ≥ 80 % of the encoder-only rate", f"{100 * ratio:.0f} %", ratio >= 0.8))
    dc = v.get("decode_cosine")
    if dc:
        decode_note = f"Accuracy cost of the reduced-DCT decode (f32 embeddings, {dc['photos']} photos): min cosine {dc['min']:.6f}, mean {dc['mean']:.6f} to the full decode."
print()
if decode_note:
    print(decode_note + "\n")
for name in ("ingest-exact", "ingest-fast"):
    text = [l for l in read(f"{name}.md").splitlines() if not l.startswith("{")]
    if text:
        print("```\n" + "\n".join(text) + "\n```")
print("\n## Targets\n")
print("| target | measured | met |")
print("|---|---|---|")
for what, got, ok in targets:
    shown = ("yes" if ok else "**no**") if mode == "gpu" or "parity" in what or "cosine" in what else f"{'yes' if ok else 'no'} (not a target without a GPU)"
    print(f"| {what} | {got} | {shown} |")
if failed:
    print("\n**Steps that failed**: " + ", ".join(failed) + " (gpu-check.log has their stderr)")
EOF

rm -rf "$work"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu-check: failed: ${failed[*]}" >&2
    exit 1
fi
echo "gpu-check: every step ran and parity holds; results in $out/summary.md" >&2
