#!/usr/bin/env python3
"""hnswlib peer for the `ann` bench (same method as shared/baselines/scripts/bench_ann.py).

Reads the bench's base/queries (.fvecs, L2-normalised) and ground truth (.ivecs, exact 1024-d top-k),
builds hnswlib (inner product) at full dimension and/or on the first `d` dims re-normalised, and
prints one JSON line per (dim, ef, k') point: recall@k, QPS 1 thread (one query per call, re-rank
included), QPS all threads (one batch call + re-rank split over a thread pool), build seconds.
"""
import argparse, json, os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
import numpy as np
import hnswlib


def read_vecs(path, dtype):
    a = np.fromfile(path, dtype=np.int32)
    d = a[0]
    a = a.reshape(-1, d + 1)[:, 1:]
    return np.ascontiguousarray(a.view(dtype))


def l2n(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dims", default="1024,256")
    ap.add_argument("--efs", default="16,32,64,128")
    ap.add_argument("--kprimes", default="50,100")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--efc", type=int, default=200)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per point (best reported)")
    ap.add_argument("--index-dir", default=None, help="save built indexes here; load them when present")
    ap.add_argument("--tag", default="data", help="names the data set in saved index files")
    a = ap.parse_args()
    base = read_vecs(a.base, np.float32)
    q = read_vecs(a.queries, np.float32)
    gt = read_vecs(a.gt, np.int32)[:, : a.k]
    n, full = base.shape
    nq = q.shape[0]
    k = a.k

    def recall(res):
        return float(np.mean([len(set(res[i, :k].tolist()) & set(gt[i].tolist())) / k for i in range(nq)]))

    for dim in [int(x) for x in a.dims.split(",")]:
        dim = min(dim, full)
        X = base if dim == full else l2n(base[:, :dim])
        Q = q if dim == full else l2n(q[:, :dim])
        saved = None
        if a.index_dir:
            saved = os.path.join(a.index_dir, f"hnswlib-{a.tag}-d{dim}-M{a.m}-efc{a.efc}.bin")
        idx = hnswlib.Index(space="ip", dim=dim)
        if saved and os.path.exists(saved) and os.path.exists(saved + ".json"):
            idx.load_index(saved, max_elements=n)
            with open(saved + ".json") as f:
                build_s = json.load(f)["build_s"]
            print(f"hnswlib-{dim}: loaded {saved} (built in {build_s:.1} s)", file=sys.stderr)
        else:
            t0 = time.perf_counter()
            idx.init_index(max_elements=n, ef_construction=a.efc, M=a.m, random_seed=100)
            idx.add_items(X, np.arange(n), num_threads=a.threads)
            build_s = time.perf_counter() - t0
            if saved:
                idx.save_index(saved)
                with open(saved + ".json", "w") as f:
                    json.dump({"build_s": build_s}, f)
        del X
        name = f"hnswlib-{dim}" + ("" if dim == full else f"+rerank{full}")
        kps = [k] if dim == full else [int(x) for x in a.kprimes.split(",")]

        def rerank(qi, cand):
            cand = cand[cand >= 0]
            s = base[cand] @ q[qi]
            return cand[np.argsort(-s)[:k]]

        for ef in [int(x) for x in a.efs.split(",")]:
            idx.set_ef(ef)
            for kp in kps:
                for i in range(20):
                    idx.knn_query(Q[i : i + 1], k=kp, num_threads=1)
                res = np.empty((nq, k), dtype=np.int64)
                t1 = tb = float("inf")
                for _ in range(max(1, a.repeats)):
                    t = time.perf_counter()
                    for i in range(nq):
                        c = idx.knn_query(Q[i : i + 1], k=kp, num_threads=1)[0][0].astype(np.int64)
                        res[i] = rerank(i, c) if dim != full else c[:k]
                    t1 = min(t1, time.perf_counter() - t)
                    t = time.perf_counter()
                    C = idx.knn_query(Q, k=kp, num_threads=a.threads)[0].astype(np.int64)
                    if dim != full:
                        parts = np.array_split(np.arange(nq), a.threads)
                        with ThreadPoolExecutor(a.threads) as ex:
                            outs = list(ex.map(lambda ii: np.stack([rerank(i, C[i]) for i in ii]), parts))
                        resb = np.concatenate(outs)
                    else:
                        resb = C[:, :k]
                    tb = min(tb, time.perf_counter() - t)
                r1 = recall(res)
                print(json.dumps(dict(system=name, dim=dim, ef=ef, kprime=kp, recall=round(r1, 4),
                                      recall_batch=round(recall(resb), 4), qps_1t=round(nq / t1, 1),
                                      qps_all=round(nq / tb, 1), build_s=round(build_s, 2), threads=a.threads,
                                      maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))),
                      flush=True)
        del idx


if __name__ == "__main__":
    main()
