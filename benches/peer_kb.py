"""The peer of `lathe bench kb`: sentence-transformers + lancedb doing what lathe's knowledge engine
does, on the same data. Prints one JSON line.

    python3 peer_kb.py ingest --model DIR --chunks CHUNKS.json --uri DB --threads 2 --batch 32 --commit 256 [--limit N]
        embeds the chunk texts lathe embedded (its "embed" field: headings then text; the first N) and adds them
        to a lancedb table in groups of --commit rows, then builds the full-text index; chunks/s
        and peak RSS
    python3 peer_kb.py query --uri VECTORS_DIR --table big --queries Q.json --rounds 5
        opens the Lance dataset lathe wrote (VECTORS_DIR/big.lance) with lancedb and times vector
        (metric cosine), full-text and hybrid (its RRF reranker) searches, k = 10; p50 and p99 ms
"""
import argparse
import json
import resource
import time


def ingest(a):
    import torch

    torch.set_num_threads(a.threads)
    import lancedb
    import pyarrow as pa
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    rows = json.load(open(a.chunks))
    if a.limit:
        rows = rows[: a.limit]
    t0 = time.perf_counter()
    model = SentenceTransformer(a.model, device="cpu")
    load_s = time.perf_counter() - t0
    db = lancedb.connect(a.uri)
    table = None
    t0 = time.perf_counter()
    for start in range(0, len(rows), a.commit):
        part = rows[start : start + a.commit]
        vecs = model.encode([r["embed"] for r in part], batch_size=a.batch, convert_to_numpy=True)
        data = pa.table(
            {
                "chunk_id": [r["chunk_id"] for r in part],
                "path": [r["path"] for r in part],
                "text": [r["text"] for r in part],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1).astype("float32")), vecs.shape[1]),
            }
        )
        if table is None:
            table = db.create_table("stdlib", data)
        else:
            table.add(data)
    embed_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table.create_fts_index("text", replace=True)
    fts_s = time.perf_counter() - t1
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "chunks": len(rows),
                "seconds": dt,
                "chunks_per_s": len(rows) / dt,
                "embed_s": embed_s,
                "fts_s": fts_s,
                "load_s": load_s,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "sentence_transformers": sentence_transformers.__version__,
                "lancedb": lancedb.__version__,
            }
        )
    )


def pct(v, p):
    s = sorted(v)
    return s[round((len(s) - 1) * p)]


def query(a):
    import lancedb

    qs = json.load(open(a.queries))
    table = lancedb.connect(a.uri).open_table(a.table)
    runs = {
        "vector": lambda q: table.search(q["vector"]).metric("cosine").limit(10).to_list(),
        "text": lambda q: table.search(q["text"], query_type="fts").limit(10).to_list(),
        "hybrid": lambda q: table.search(query_type="hybrid").vector(q["vector"]).text(q["text"]).limit(10).to_list(),
    }
    out = {"lancedb": lancedb.__version__, "rows": table.count_rows()}
    for name, run in runs.items():
        for q in qs:
            run(q)  # warm
        ms = []
        for _ in range(a.rounds):
            for q in qs:
                t = time.perf_counter()
                run(q)
                ms.append((time.perf_counter() - t) * 1e3)
        out[name] = {"p50": pct(ms, 0.5), "p99": pct(ms, 0.99)}
    print(json.dumps(out))


p = argparse.ArgumentParser()
sub = p.add_subparsers(dest="cmd", required=True)
i = sub.add_parser("ingest")
i.add_argument("--model", required=True)
i.add_argument("--chunks", required=True)
i.add_argument("--uri", required=True)
i.add_argument("--threads", type=int, default=2)
i.add_argument("--batch", type=int, default=32)
i.add_argument("--commit", type=int, default=256)
i.add_argument("--limit", type=int, default=0, help="only the first N chunks (0: all)")
q = sub.add_parser("query")
q.add_argument("--uri", required=True)
q.add_argument("--table", required=True)
q.add_argument("--queries", required=True)
q.add_argument("--rounds", type=int, default=5)
a = p.parse_args()
ingest(a) if a.cmd == "ingest" else query(a)
