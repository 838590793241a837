#!/usr/bin/env python3
"""Held-out query evaluation of the fusion modes on the toy shop catalog.

usage: evaluate.py JSEARCH_BINARY STORE MODEL_DIR
Prints, per setting (blend, rrf, vector only, keyword only): SKU at rank 1, brand precision@5,
descriptive queries' precision@5.
"""
import json, subprocess, sys, tempfile, os

binary, store, model = sys.argv[1:4]
here = os.path.dirname(os.path.abspath(__file__))
queries = [json.loads(l) for l in open(os.path.join(here, "queries.jsonl"))]
with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    for i, q in enumerate(queries):
        f.write(json.dumps({"id": str(i), "text": q["text"]}) + "\n")
    qfile = f.name
settings = [("blend", ["--mode", "hybrid", "--fusion", "blend"]),
            ("rrf", ["--mode", "hybrid", "--fusion", "rrf"]),
            ("vector only", ["--mode", "vector"]),
            ("keyword only", ["--mode", "keyword"])]
print("| held-out queries (toy model) | " + " | ".join(s for s, _ in settings) + " |")
print("|---|" + "---|" * len(settings))
rows = {"sku": [], "brand": [], "describe": []}
for name, args in settings:
    out = subprocess.run([binary, "--db", store, "--model", model, "-q", "query", "--queries", qfile,
                          "--json", "-k", "5"] + args, capture_output=True, text=True)
    hits = {}
    for line in out.stdout.splitlines():
        h = json.loads(line)
        if "facets" in h:
            continue
        hits.setdefault(int(h["query"]), []).append(h["id"])
    sku = [hits.get(i, [None])[0] == q["relevant"][0] for i, q in enumerate(queries) if q["kind"] == "sku"]
    def p5(kind):
        v = [sum(1 for x in hits.get(i, [])[:5] if x in set(q["relevant"])) / 5
             for i, q in enumerate(queries) if q["kind"] == kind]
        return sum(v) / len(v)
    rows["sku"].append(f"{sum(sku)}/{len(sku)}")
    rows["brand"].append(f"{p5('brand'):.2f}")
    rows["describe"].append(f"{p5('describe'):.2f}")
print("| SKU at rank 1 | " + " | ".join(rows["sku"]) + " |")
print("| brand: precision@5 | " + " | ".join(rows["brand"]) + " |")
print("| descriptive: precision@5 | " + " | ".join(rows["describe"]) + " |")
