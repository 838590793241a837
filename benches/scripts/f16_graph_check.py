"""Experiment: does building the 256-d graph on f16-rounded vectors cost recall? hnswlib (M=16,
efC=200) on f32 vs f16-rounded heads of the 100k ann-bench data, the whole beam re-ranked at
1024-d f32. Needs the files `ann --n 100000` leaves in /tmp/jsearch-ann (and its queries).
Run with benches/.venv/bin/python (made by ann_hnswlib.sh). Result in docs: stop 9 note."""
import numpy as np, hnswlib, time
def fvecs(p):
    a=np.fromfile(p,dtype=np.int32); d=a[0]; return a.reshape(-1,d+1)[:,1:].view(np.float32)
def ivecs(p):
    a=np.fromfile(p,dtype=np.int32); d=a[0]; return a.reshape(-1,d+1)[:,1:]
B=fvecs('/tmp/jsearch-ann/base-gen-100000-1000-20240607-4096.fvecs')
# the bench's queries depend on --seed and --queries only, not on --n
Q=fvecs('/tmp/jsearch-ann/queries.fvecs')
gt=ivecs('/tmp/jsearch-ann/gt-gen-100000-1000-20240607-4096-k10.ivecs')
def trunc(x):
    h=x[:,:256].copy(); h/=np.linalg.norm(h,axis=1,keepdims=True); return h
for name,conv in [('f32',lambda x:x),('f16',lambda x:x.astype(np.float16).astype(np.float32))]:
    H=conv(trunc(conv(B))); QH=trunc(Q)
    p=hnswlib.Index(space='ip',dim=256); p.init_index(max_elements=len(H),M=16,ef_construction=200,random_seed=100)
    t=time.time(); p.add_items(H,num_threads=2); bt=time.time()-t
    for ef in [16,24,32,48]:
        p.set_ef(ef)
        lab,_=p.knn_query(QH,k=ef,num_threads=2)
        r=0
        for i in range(len(Q)):
            c=lab[i]; s=B[c]@Q[i]; top=c[np.argsort(-s)[:10]]
            r+=len(set(top)&set(gt[i]))
        print(name,'build',round(bt,1),'ef',ef,'recall(beam reranked)',r/(10*len(Q)),flush=True)
