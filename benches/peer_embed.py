"""The peer of `lathe bench embed`: sentence-transformers encoding the same texts with the same
model, batch size and thread count, on the CPU. Prints one JSON line; writes the vectors (f32,
little-endian, row by row) to --out so that lathe can compare its own with them.

    python3 peer_embed.py --model DIR --texts TEXTS.json --batch 32 --threads 2 --out VECS.bin
"""
import argparse
import json
import resource
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--texts", required=True)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--out", required=True)
a = p.parse_args()

import numpy as np
import torch

torch.set_num_threads(a.threads)
import sentence_transformers
from sentence_transformers import SentenceTransformer

texts = json.load(open(a.texts))
rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
model = SentenceTransformer(a.model, device="cpu")
load_s = time.perf_counter() - t0
model.encode(texts[: a.batch], batch_size=a.batch)  # warm-up
t0 = time.perf_counter()
vecs = model.encode(texts, batch_size=a.batch, convert_to_numpy=True)
dt = time.perf_counter() - t0
np.asarray(vecs, dtype="<f4").tofile(a.out)
tokens = sum(len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]) for t in texts)
print(json.dumps({
    "texts_per_s": len(texts) / dt,
    "tokens_per_s": tokens / dt,
    "tokens": tokens,
    "seconds": dt,
    "load_s": load_s,
    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "rss_after_import": rss_import,
    "threads": torch.get_num_threads(),
    "torch": torch.__version__,
    "sentence_transformers": sentence_transformers.__version__,
    "max_seq_length": model.max_seq_length,
}))
