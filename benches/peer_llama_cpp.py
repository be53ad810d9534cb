"""The peer for `lathe bench chat`: prompt processing and generation speed of a GGUF file in
llama-cpp-python (llama.cpp built from source by pip), the same measurement lathe makes:
a fresh cache, the prompt read in batches, then tokens decoded one at a time (greedy).
Prints one JSON line.

CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python
python3 benches/peer_llama_cpp.py --model M.gguf --threads 2 --prompt 128 --gen 64
"""
import argparse
import json
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.ctx, n_threads=a.threads, n_threads_batch=a.threads,
                n_batch=512, n_ubatch=512, logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()
    prompt = [300 + (i * 7919) % (n_vocab - 300) for i in range(a.prompt)]
    pps, tgs, firsts = [], [], []
    for _ in range(a.runs):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        pp = time.perf_counter() - t0
        t1 = time.perf_counter()
        first = None
        for i in range(a.gen):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if i == 0:
                first = time.perf_counter() - t0
            llm.eval([tok])
        tg = time.perf_counter() - t1
        pps.append(a.prompt / pp)
        tgs.append(a.gen / tg)
        firsts.append(first)
    # Best of the runs, as lathe reports: noise on a shared machine only ever slows a run down.
    print(json.dumps({"prompt_tokens_per_s": max(pps), "tokens_per_s": max(tgs), "first_token_s": min(firsts),
                      "llama_cpp_python": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
