#!/usr/bin/env python3
"""Which re-rank shortlist finds the true top-10? (the experiment behind the store's sketches)

For each query: pool = the `pool` nearest by normalised 256-d head (a stand-in for the graph's
beam), ranked by the head cosine alone, by ‖x_h‖·cos, and by head + a 1/2/4-bit tail estimate;
the best m of each ranking are re-ranked exactly and recall@10 against the ground truth printed.

  benches/.venv/bin/python benches/scripts/sketch_shortlist.py N WORK_DIR QUERIES POOL
  (WORK_DIR as written by the `ann` bench: base-gen-N-...fvecs, queries.fvecs, gt.ivecs)
"""
import numpy as np, sys
n = int(sys.argv[1]); work = sys.argv[2]; nq = int(sys.argv[3]); pool=int(sys.argv[4])
a = np.memmap(f"{work}/base-gen-{n}-1000-20240607-4096.fvecs", dtype=np.int32, mode='r').reshape(-1,1025)
B = a[:,1:].view(np.float32)
qa = np.fromfile(f"{work}/queries.fvecs", dtype=np.int32).reshape(-1,1025)
Q = qa[:nq,1:].view(np.float32)
gt = np.fromfile(f"{work}/gt.ivecs", dtype=np.int32).reshape(-1,11)[:, 1:]
H=256
Bh = np.empty((B.shape[0],H),np.float32); hn=np.empty(B.shape[0],np.float32)
for s in range(0,B.shape[0],100000):
    x = B[s:s+100000,:H]; nn = np.linalg.norm(x,axis=1); hn[s:s+100000]=nn
    Bh[s:s+100000] = (x/nn[:,None]).astype(np.float16)
res = {}
for qi in range(nq):
    q = Q[qi]; qh = np.linalg.norm(q[:H])
    ch = Bh @ (q[:H]/qh)
    P = np.argpartition(-ch, pool)[:pool]
    X = B[P].astype(np.float16).astype(np.float32)
    truth = set(gt[qi,:10])
    T = X[:,H:]; qt = q[H:]
    alpha = np.abs(T).sum(1)/T.shape[1]
    s4 = np.abs(T).max(1)/7.0; T4 = np.clip(np.round(T/s4[:,None]),-7,7)*s4[:,None]
    s2 = np.abs(T).mean(1)*1.5; T2 = np.clip(np.round(T/s2[:,None]+0.5)-0.5,-1.5,1.5)*s2[:,None]
    head = qh*hn[P]*ch[P]
    est = {'cos_h': ch[P], 'hx*cos_h': head, '+1bit': head + alpha*(np.sign(T)@qt),
           '+2bit': head + T2@qt, '+int4': head + T4@qt}
    ex = X@q
    for name,e in est.items():
        order = np.argsort(-e)
        for m in (10,15,20,30,50,100):
            sl = order[:m]
            top = P[sl[np.argsort(-ex[sl])[:10]]]
            res.setdefault((name,m),[]).append(len(truth & set(top))/10)
for k,v in sorted(res.items()):
    print(k, round(float(np.mean(v)),4))
