#!/usr/bin/env python3
"""Writes the toy shop catalog (catalog.jsonl, catalog.csv and queries.jsonl) deterministically.

Products of the toy-shapes domain (colours x shapes, words the toy model knows) from six brands,
with a SKU, a price, a category, a stock flag and tags. `python3 generate.py` rewrites the files
byte for byte the same.
"""
import csv, json, random

BRANDS = ["Korrin", "Lumo", "Vexa", "Ostra", "Pellin", "Tarnu"]
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "cross", "moon", "shoe"]
CATEGORIES = ["card", "sticker", "poster", "mug", "shirt", "sign"]
N = 300

rng = random.Random(13)
rows = []
skus = rng.sample(range(10000, 99999), N)
for i in range(N):
    brand = BRANDS[i % len(BRANDS)]
    colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
    cat = rng.choice(CATEGORIES)
    rows.append({
        "id": f"p{i:04d}",
        "sku": f"SKU-{skus[i]}",
        "title": f"{brand} {colour} {shape} {cat}",
        "description": f"A {colour} {shape} on a {cat}, from the {brand} toy shop.",
        "brand": brand,
        "price": round(rng.uniform(1, 60), 2),
        "category": cat,
        "in_stock": rng.random() < 0.7,
        "tags": sorted(rng.sample(["gift", "new", "sale", "eco", "kids"], rng.randint(0, 2))),
    })
with open("catalog.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
with open("catalog.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "sku:string", "title", "description", "brand", "price", "category",
                "in_stock", "tags:list"])
    for r in rows:
        w.writerow([r["id"], r["sku"], r["title"], r["description"], r["brand"], r["price"],
                    r["category"], str(r["in_stock"]).lower(), "|".join(r["tags"])])
# Held-out queries: SKUs, brands, and descriptive queries with their relevant ids.
q = rng.sample(rows, 25)
with open("queries.jsonl", "w") as f:
    for r in q:
        f.write(json.dumps({"kind": "sku", "text": r["sku"], "relevant": [r["id"]]}) + "\n")
    for b in BRANDS:
        rel = [r["id"] for r in rows if r["brand"] == b]
        f.write(json.dumps({"kind": "brand", "text": b, "relevant": rel}) + "\n")
    for colour in COLOURS[:4]:
        for shape in SHAPES[:4]:
            rel = [r["id"] for r in rows if f"{colour} {shape}" in r["title"]]
            if rel:
                f.write(json.dumps({"kind": "describe", "text": f"{colour} {shape}",
                                    "relevant": rel}) + "\n")
