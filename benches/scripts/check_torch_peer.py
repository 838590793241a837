#!/usr/bin/env python3
"""Checks the PyTorch peer of the encoder bench against the golden fixtures (so the peer computes the
real jina-clip-v2 function, not just something of the same size). Usage: check_torch_peer.py REPO_ROOT"""
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

root = sys.argv[1] if len(sys.argv) > 1 else "."
exp = load_file(f"{root}/datasets/jina-clip-v2-tiny/expected.safetensors")
ids = exp["text.batch.input_ids_padded"].astype(np.int64)
pix = exp["image.0.pixel_values"][None].astype(np.float32)
import json
pix.tofile("/tmp/peer_pixels.f32")
json.dump({"ids_q1": ids[:1, :26].tolist(), "ids_q32": ids.tolist(), "pixels_f32": "/tmp/peer_pixels.f32"},
          open("/tmp/peer_inputs.json", "w"))
subprocess.run([sys.executable, f"{root}/benches/scripts/encoders_torch.py", "--model",
                f"{root}/datasets/jina-clip-v2-tiny/model", "--threads", "1", "--cases", "q1,q32,img",
                "--iters", "1", "--inputs", "/tmp/peer_inputs.json", "--out-embeddings", "/tmp/peer_out.json"],
               check=True, stdout=subprocess.DEVNULL)
out = {k: np.array(v, dtype=np.float32) for k, v in json.load(open("/tmp/peer_out.json")).items()}
d_text = np.abs(out["q32"] - exp["text.batch.embeds_raw"]).max()
d_img = np.abs(out["img"][0] - exp["image.0.embeds_raw"]).max()
print(f"peer vs fixtures: text raw max abs diff {d_text:.2e}, image raw max abs diff {d_img:.2e}")
sys.exit(0 if d_text < 1e-4 and d_img < 1e-4 else 1)
