"""The peer for `lathe bench imatrix`: an importance matrix the usual Python way, at TinyLlama-1.1B
shapes in PyTorch + transformers on the CPU (random float32 weights): a forward pre-hook on every
projection of every decoder layer sums, per input channel, the squared inputs of each forward pass
(float32 per pass, float64 across passes, as lathe does) and counts the rows. The same chunks are
also run once without hooks through the whole model (the head too), as an evaluation's forward pass.
Prints one JSON line: tokens per second of each, peak RSS in bytes, threads, torch's version.

python3 benches/peer_imatrix.py --chunks 4 --seq 512 [--layers 22]
"""
import argparse
import json
import resource
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--layers", type=int, default=22)
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=a.layers,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).float().eval()
    ids = torch.randint(0, cfg.vocab_size, (a.chunks, a.seq))

    def run_all():
        t = time.perf_counter()
        with torch.no_grad():
            for row in ids:
                model(row.unsqueeze(0))
        return a.chunks * a.seq / (time.perf_counter() - t)

    with torch.no_grad():
        model(ids[0, :16].unsqueeze(0))  # warm-up
    forward = run_all()

    sums, counts, hooks = {}, {}, []
    for i, layer in enumerate(model.model.layers):
        for name, module in layer.named_modules():
            if name.rsplit(".", 1)[-1] not in PROJECTIONS:
                continue
            key = f"{i}.{name}"

            def hook(_mod, args, key=key):
                x = args[0].detach()
                x = x.reshape(-1, x.shape[-1])
                sums[key] = sums.get(key, 0) + (x * x).sum(0).to(torch.float64)
                counts[key] = counts.get(key, 0) + x.shape[0]

            hooks.append(module.register_forward_pre_hook(hook))
    # The matrix needs no logits: the head is skipped, as lathe and llama-imatrix skip it.
    body = model.model
    t = time.perf_counter()
    with torch.no_grad():
        for row in ids:
            body(row.unsqueeze(0))
    imatrix = a.chunks * a.seq / (time.perf_counter() - t)
    for h in hooks:
        h.remove()
    assert len(sums) == 7 * a.layers and all(c == a.chunks * a.seq for c in counts.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"forward_tokens_per_s": forward, "imatrix_tokens_per_s": imatrix, "peak_rss": peak,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
