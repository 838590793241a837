#!/usr/bin/env python3
"""PyTorch peer for the encoder benchmark (`cargo run --release -p jsearch-benches --bin encoders`).

A compact PyTorch implementation of jina-clip-v2 inference written from docs/jina-clip-v2-spec.md
(XLM-R with rotary + merged LoRA, post-LN, GELU; EVA02 with 2D RoPE, SwiGLU, sub-LN), using
`torch.nn.functional.scaled_dot_product_attention`. It loads the SAME checkpoint directory as the Rust
bench (real jina-clip-v2 sizes, random weights, official tensor names), times the same shapes, and
writes the embeddings it computed so that the Rust bench can report the agreement of the two.

Prints one JSON object per case on stdout.

`--dtype onnx-float32` / `onnx-int8` run ONNX Runtime instead (what fastembed and most production
CPU deployments run): the same float32 functions are exported with `torch.onnx.export` (once per
checkpoint, into `--onnx-dir`, default `<checkpoint>/onnx`), the int8 model is made from it with
onnxruntime's dynamic quantisation (`quantize_dynamic`, int8 weights, activations quantised per
call), and sessions run on the CPU provider with the same thread count. `load` is then the time
to create the sessions from the exported files (the export itself is reported as `export_s`).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True, help="checkpoint dir (config.json + model.safetensors)")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "onnx-float32", "onnx-int8"])
ap.add_argument("--onnx-dir", help="where the exported ONNX models are kept (default <model>/onnx)")
ap.add_argument("--cases", default="load,q1,q32,p512,img")
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--passage-batch", type=int, default=2)
ap.add_argument("--image-batch", default="1", help="images per batch; a comma list runs one case per size")
ap.add_argument("--query-batch", type=int, default=32, help="queries per batch of the q32 case")
ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16/float32 torch only)")
ap.add_argument("--inputs", help="JSON {ids_q1, ids_q32, ids_p: [[int]], pixels_f32: path of raw little-endian f32 [b,3,S,S]} to use instead of random")
ap.add_argument("--out-embeddings", help="write the raw embeddings of the cases run (JSON {case: [[f32]]})")
a = ap.parse_args()
torch.set_num_threads(a.threads)
ONNX = a.dtype.startswith("onnx-")
DT = torch.float32 if ONNX else getattr(torch, a.dtype)
DEV = torch.device(a.device)
CUDA = DEV.type == "cuda"
IMAGE_BATCHES = [int(x) for x in str(a.image_batch).split(",") if x.strip()]


def sync():
    if CUDA:
        torch.cuda.synchronize()


def emit(**row):
    if ONNX:
        import onnxruntime
        row.update(peer="onnxruntime", onnxruntime=onnxruntime.__version__, threads=a.threads, dtype=a.dtype)
    else:
        row.update(peer="pytorch", torch=torch.__version__, threads=a.threads, dtype=a.dtype, device=a.device)
        if CUDA:
            row.update(peak_gpu_alloc_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                       gpu=torch.cuda.get_device_name())
    print(json.dumps(row), flush=True)


cfg = json.load(open(os.path.join(a.model, "config.json")))
# The text hyper-parameters: jina-embeddings-v3's config, overridden by hf_model_config_kwargs (spec §1.3).
V3_DEFAULTS = dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096, rotary_emb_base=20000.0, lora_alpha=1, lora_rank=4)
tk = {**V3_DEFAULTS, **cfg["text_config"].get("hf_model_config_kwargs", {})}
vc = cfg["vision_config"]
H, NL, NH = tk["hidden_size"], tk["num_hidden_layers"], tk["num_attention_heads"]
RB = tk.get("rotary_emb_base", 20000.0)
LORA_S = tk["lora_alpha"] / tk["lora_rank"]
VW, VL, VHW = vc["width"], vc["layers"], vc["head_width"]
VNH = VW // VHW
IMG, PATCH = vc["image_size"], vc["patch_size"]
GRID = IMG // PATCH

ONNX_DIR = a.onnx_dir or os.path.join(a.model, "onnx")
_cases = a.cases.split(",")
_towers = [t for t, want in (("text", any(c in _cases for c in ("q1", "q32", "p512", "load"))),
                             ("vision", "img" in _cases)) if want]
_kind = "float32" if a.dtype == "onnx-float32" else "int8"
# ONNX with every needed model already exported: no torch weights at all (a deployment's process).
SKIP_TORCH = ONNX and all(os.path.exists(os.path.join(ONNX_DIR, f"{t}-{_kind}.onnx.done")) for t in _towers)
load_s = 0.0
if not SKIP_TORCH:
    t0 = time.perf_counter()
    sd = load_file(os.path.join(a.model, "model.safetensors"))
    T = "text_model.transformer.roberta."


    def lin(prefix):
        w = sd[prefix + ".parametrizations.weight.original"].float()
        A = sd[prefix + ".parametrizations.weight.0.lora_A"][0].float()
        B = sd[prefix + ".parametrizations.weight.0.lora_B"][0].float()
        return (w + LORA_S * B @ A).to(DT).contiguous().to(DEV), sd[prefix + ".bias"].to(DT).to(DEV)


    def emb(prefix):
        w = sd[prefix + ".parametrizations.weight.original"].float()
        A = sd[prefix + ".parametrizations.weight.0.lora_A"][0].float()
        B = sd[prefix + ".parametrizations.weight.0.lora_B"][0].float()
        return (w + LORA_S * A @ B).to(DT).to(DEV)


    word = emb(T + "embeddings.word_embeddings")
    ttype = emb(T + "embeddings.token_type_embeddings")
    g = lambda k: sd[k].to(DT).to(DEV)  # noqa: E731
    emb_ln = (g(T + "emb_ln.weight"), g(T + "emb_ln.bias"))
    tl = []
    for i in range(NL):
        p = f"{T}encoder.layers.{i}."
        tl.append(dict(qkv=lin(p + "mixer.Wqkv"), out=lin(p + "mixer.out_proj"), fc1=lin(p + "mlp.fc1"),
                       fc2=lin(p + "mlp.fc2"), n1=(g(p + "norm1.weight"), g(p + "norm1.bias")),
                       n2=(g(p + "norm2.weight"), g(p + "norm2.bias"))))
    V = "vision_model."
    vb = []
    for i in range(VL):
        p = f"{V}blocks.{i}."
        zero_k = torch.zeros(VW, dtype=DT, device=DEV)
        wqkv = torch.cat([g(p + "attn.q_proj.weight"), g(p + "attn.k_proj.weight"), g(p + "attn.v_proj.weight")])
        bqkv = torch.cat([g(p + "attn.q_bias"), zero_k, g(p + "attn.v_bias")])
        vb.append(dict(n1=(g(p + "norm1.weight"), g(p + "norm1.bias")), qkv=(wqkv.contiguous(), bqkv),
                       iln=(g(p + "attn.inner_attn_ln.weight"), g(p + "attn.inner_attn_ln.bias")),
                       proj=(g(p + "attn.proj.weight"), g(p + "attn.proj.bias")),
                       n2=(g(p + "norm2.weight"), g(p + "norm2.bias")),
                       w12=(torch.cat([g(p + "mlp.w1.weight"), g(p + "mlp.w2.weight")]).contiguous(),
                            torch.cat([g(p + "mlp.w1.bias"), g(p + "mlp.w2.bias")])),
                       fln=(g(p + "mlp.ffn_ln.weight"), g(p + "mlp.ffn_ln.bias")),
                       w3=(g(p + "mlp.w3.weight"), g(p + "mlp.w3.bias"))))
    patch_w, patch_b = g(V + "patch_embed.proj.weight"), g(V + "patch_embed.proj.bias")
    cls, pos = g(V + "cls_token"), g(V + "pos_embed")
    vnorm = (g(V + "norm.weight"), g(V + "norm.bias"))
    del sd
    sync()
    load_s = time.perf_counter() - t0

# text rotary (NeoX halves, base 20000, positions from 0)
hd = H // NH
inv = (1.0 / (RB ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))).to(DEV)
# vision 2D RoPE (interleaved pairs, base 10000, positions r * pt_hw_seq_len / grid)
theta = 1.0 / (10000 ** (torch.arange(0, VHW // 2, 2, dtype=torch.float32) / (VHW // 2)))
t = torch.arange(GRID, dtype=torch.float32) * vc["pt_hw_seq_len"] / GRID
ax = (t[:, None] * theta[None, :]).repeat_interleave(2, dim=-1)  # [grid, hd/2]
ang = torch.cat([ax[:, None, :].expand(GRID, GRID, -1), ax[None, :, :].expand(GRID, GRID, -1)], dim=-1)
vcos, vsin = ang.reshape(GRID * GRID, -1).cos().to(DT).to(DEV), ang.reshape(GRID * GRID, -1).sin().to(DT).to(DEV)


def ln(x, wb, eps):
    # the weight's (static) shape, not x's: the same for torch, and traceable for the ONNX export
    return F.layer_norm(x, tuple(wb[0].shape), wb[0], wb[1], eps)


def text_forward(ids):
    b, L = ids.shape
    x = ln(word[ids] + ttype[0], emb_ln, 1e-5)
    mask = ids != 1
    bias = torch.zeros(b, 1, 1, L, dtype=DT, device=ids.device).masked_fill(~mask[:, None, None, :], -10000.0)
    angl = torch.arange(L, dtype=torch.float32, device=ids.device)[:, None] * inv[None, :]
    c, s = angl.cos().to(DT), angl.sin().to(DT)
    half = hd // 2
    for ly in tl:
        qkv = F.linear(x, *ly["qkv"]).view(b, L, 3, NH, hd)
        q, k, v = qkv.unbind(2)

        def rot(u):
            u1, u2 = u[..., :half], u[..., half:]
            cc, ss = c[None, :, None, :], s[None, :, None, :]
            return torch.cat([u1 * cc - u2 * ss, u2 * cc + u1 * ss], dim=-1)

        q, k = rot(q).transpose(1, 2), rot(k).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), attn_mask=bias)
        ctx = ctx.transpose(1, 2).reshape(b, L, H)
        x = ln(x + F.linear(ctx, *ly["out"]), ly["n1"], 1e-5)
        x = ln(x + F.linear(F.gelu(F.linear(x, *ly["fc1"])), *ly["fc2"]), ly["n2"], 1e-5)
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1)


def rot2d(u):  # u [b, heads, n, hd] for patch tokens
    u2 = torch.stack([-u[..., 1::2], u[..., 0::2]], dim=-1).flatten(-2)
    return u * vcos + u2 * vsin


def vision_forward(px):
    b = px.shape[0]
    x = F.conv2d(px, patch_w, patch_b, stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([cls.expand(b, -1, -1), x], dim=1) + pos
    n = x.shape[1]
    for blk in vb:
        h = ln(x, blk["n1"], 1e-6)
        qkv = F.linear(h, *blk["qkv"]).view(b, n, 3, VNH, VHW).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = torch.cat([q[:, :, :1], rot2d(q[:, :, 1:])], dim=2)
        k = torch.cat([k[:, :, :1], rot2d(k[:, :, 1:])], dim=2)
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, VW)
        x = x + F.linear(ln(ctx, blk["iln"], 1e-6), *blk["proj"])
        h = ln(x, blk["n2"], 1e-6)
        g1, g2 = F.linear(h, *blk["w12"]).chunk(2, dim=-1)
        x = x + F.linear(ln(F.silu(g1) * g2, blk["fln"], 1e-6), *blk["w3"])
    return ln(x, vnorm, 1e-6)[:, 0]


def onnx_forwards(cases):
    """Exports (once) and loads the ONNX models; returns ORT-backed forwards, load and export time."""
    import onnxruntime as ort
    d = ONNX_DIR
    os.makedirs(d, exist_ok=True)
    want_text = any(c in cases for c in ("q1", "q32", "p512", "load"))
    want_vision = "img" in cases

    class Text(torch.nn.Module):
        def forward(self, ids):
            return text_forward(ids)

    class Vision(torch.nn.Module):
        def forward(self, px):
            return vision_forward(px)

    def export(name, module, example, dyn, names):
        path = os.path.join(d, f"{name}-float32.onnx")
        if not os.path.exists(path + ".done"):
            # torch.export-based exporter: the captured weights become initializers in one
            # external data file (the TorchScript exporter names a >2 GB model's constants into
            # colliding files).
            D = torch.export.Dim.DYNAMIC
            shapes = {names[0]: {ax: D for ax in dyn[names[0]]}}
            with torch.no_grad():
                prog = torch.onnx.export(module, (example,), input_names=names, output_names=["out"],
                                         dynamic_shapes=shapes, opset_version=18, dynamo=True,
                                         external_data=True)
            prog.save(path, external_data=True)
            open(path + ".done", "w").close()
        if a.dtype == "onnx-float32":
            return path
        qpath = os.path.join(d, f"{name}-int8.onnx")
        if not os.path.exists(qpath + ".done"):
            from onnxruntime.quantization import QuantType, quantize_dynamic
            # MatMul/Gemm only: the linear layers (the patch-embedding Conv is tiny, and its bias is
            # not an initializer in the traced graph, which quantize_dynamic refuses)
            quantize_dynamic(path, qpath, weight_type=QuantType.QInt8, use_external_data_format=True,
                             op_types_to_quantize=["MatMul", "Gemm"])
            open(qpath + ".done", "w").close()
        return qpath

    te = time.perf_counter()
    paths = {}
    if want_text:
        ids = torch.tensor([[0, 5, 6, 2]], dtype=torch.long)
        paths["text"] = export("text", Text(), ids, {"ids": {0: "b", 1: "L"}, "out": {0: "b"}}, ["ids"])
    if want_vision:
        px = torch.zeros(1, 3, IMG, IMG)
        paths["vision"] = export("vision", Vision(), px, {"px": {0: "b"}, "out": {0: "b"}}, ["px"])
    export_s = time.perf_counter() - te
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    tl0 = time.perf_counter()
    sess = {k: ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    load = time.perf_counter() - tl0

    def text_ort(ids):
        return torch.from_numpy(sess["text"].run(None, {"ids": ids.numpy().astype(np.int64)})[0])

    def vision_ort(px):
        return torch.from_numpy(sess["vision"].run(None, {"px": px.float().numpy()})[0])

    return text_ort, vision_ort, load, export_s


def timed(fn, iters):
    with torch.inference_mode():
        tw = time.perf_counter()
        out = fn()
        sync()
        warm = time.perf_counter() - tw
        ts = []
        for _ in range(iters):
            t1 = time.perf_counter()
            out = fn()
            sync()
            ts.append(time.perf_counter() - t1)
    return out, warm, ts


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


cases = a.cases.split(",")
if ONNX:
    text_forward, vision_forward, load_s, export_s = onnx_forwards(cases)
if "load" in cases:
    if ONNX:
        emit(case="load", seconds=round(load_s, 3), export_s=round(export_s, 1), peak_rss_mb=round(rss_mb(), 1))
    else:
        emit(case="load", seconds=round(load_s, 3), peak_rss_mb=round(rss_mb(), 1))
rng = np.random.default_rng(7)
inp = json.load(open(a.inputs)) if a.inputs else None


def ids_for(name, b, L):
    if inp is not None and name in inp:
        return torch.tensor(inp[name], dtype=torch.long).to(DEV)
    ids = torch.from_numpy(rng.integers(5, tk["vocab_size"] - 1, size=(b, L))).long()
    ids[:, 0], ids[:, -1] = 0, 2
    return ids.to(DEV)


saved = {}


def case(name, batch, seq, fn, iters, digits=2):
    """Times fn, keeps its outputs under the case's name (what the Rust bench compares)."""
    out, warm, ts = timed(fn, iters)
    saved[name] = out.float().cpu().numpy()
    m = float(np.median(ts))
    emit(case=name, batch=batch, seq=seq, median_ms=round(1000 * m, 2), per_s=round(batch / m, digits),
         peak_rss_mb=round(rss_mb(), 1))


if "q1" in cases:
    ids = ids_for("ids_q1", 1, 8)
    case("query_1x8", 1, 8, lambda: text_forward(ids), max(a.iters, 10))
if "q32" in cases:
    qb = a.query_batch
    ids = ids_for("ids_q32", qb, 8)
    qb = ids.shape[0]
    case(f"queries_{qb}x8", qb, 8, lambda: text_forward(ids), a.iters)
if "p512" in cases:
    bp = a.passage_batch
    ids = ids_for("ids_p", bp, 512)
    bp = ids.shape[0]
    case(f"passages_{bp}x512", bp, 512, lambda: text_forward(ids), max(1, a.iters - 1), 3)
if "img" in cases:
    if inp is not None and "pixels_f32" in inp:
        px_all = torch.from_numpy(np.fromfile(inp["pixels_f32"], dtype="<f4").reshape(-1, 3, IMG, IMG)).to(DT)
    else:
        px_all = torch.from_numpy(rng.standard_normal((max(IMAGE_BATCHES), 3, IMG, IMG), dtype=np.float32)).to(DT)
    for bi in IMAGE_BATCHES:
        px = px_all[:bi].to(DEV)
        case(f"images_{bi}x{IMG}", bi, GRID * GRID + 1, lambda: vision_forward(px), max(1, a.iters - 2), 4)
if a.out_embeddings:
    with open(a.out_embeddings, "w") as f:
        json.dump({k: v.tolist() for k, v in saved.items()}, f)
sys.exit(0)
