#!/usr/bin/env python3
"""Makes what issue 16's perplexity target is measured on when no real checkpoint is at hand: a
small Llama whose matrices are 256 wide or more (so the K-quants and IQ types apply, unlike the
demo's 128-wide ones), to be *trained* by `lathe train` on Python's own standard library, so its
predictions mean something and a quantization's perplexity gap is a real figure, not the noise of
random weights.

    scripts/imatrix_target.py OUT [--mb 4]

writes, from this Python's standard library (nothing is downloaded):
  OUT/base/              config.json, tokenizer.json (byte-level BPE, 4096, trained here on the
                         training files), model.safetensors (random init, std 0.02)
  OUT/train.jsonl        {"text": ...} records of ~700 characters (about 200 tokens) cut at line
                         ends, from the training files (every .py file under the stdlib except
                         tests and the held-out files, in sorted order, up to --mb megabytes)
  OUT/held.txt           the held-out files (configparser.py, difflib.py, textwrap.py), whole

and prints the lathe commands that train the model and report on it. Needs numpy, tokenizers and
safetensors (PyPI). On 2 cores (AMD EPYC) the training takes ~29 minutes (524 steps, eval loss
3.18) and each report 1-2 minutes.
"""
import argparse
import json
import os
import sysconfig
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HELD = ["configparser.py", "difflib.py", "textwrap.py"]
HIDDEN, INTER, LAYERS, HEADS, VOCAB = 256, 768, 4, 4, 4096


def stdlib_files():
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if "test" in rel or "site-packages" in rel or "idlelib" in rel or "lib2to3" in rel:
            continue
        out.append(p)
    return root, out


def records(text, size=700):
    cur = []
    n = 0
    for line in text.splitlines(keepends=True):
        cur.append(line)
        n += len(line)
        if n >= size:
            yield "".join(cur)
            cur, n = [], 0
    if n > 200:
        yield "".join(cur)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=4.0)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "base").mkdir(parents=True, exist_ok=True)

    root, files = stdlib_files()
    held = [root / h for h in HELD]
    train_texts = []
    total = 0
    for p in files:
        if p.name in HELD and p.parent == root:
            continue
        t = p.read_text(encoding="utf-8", errors="replace")
        train_texts.append(t)
        total += len(t)
        if total >= args.mb * 1e6:
            break
    with open(out / "train.jsonl", "w") as f:
        n = 0
        for t in train_texts:
            for r in records(t):
                f.write(json.dumps({"text": r}) + "\n")
                n += 1
    (out / "held.txt").write_text("".join(p.read_text(encoding="utf-8") for p in held))

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_texts, trainer)
    tok.save(str(out / "base" / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    (out / "base" / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "model_max_length": 512}))
    (out / "base" / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "head_dim": HIDDEN // HEADS,
        "hidden_act": "silu", "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "vocab_size": vocab,
        "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "float32",
        "attention_bias": False, "mlp_bias": False}, indent=1))

    rng = np.random.default_rng(16)
    w = {}

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w["model.embed_tokens.weight"] = normal(vocab, HIDDEN)
    w["model.norm.weight"] = np.ones(HIDDEN, np.float32)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            w[p + f"self_attn.{m}.weight"] = normal(HIDDEN, HIDDEN)
        w[p + "mlp.gate_proj.weight"] = normal(INTER, HIDDEN)
        w[p + "mlp.up_proj.weight"] = normal(INTER, HIDDEN)
        w[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTER)
        w[p + "input_layernorm.weight"] = np.ones(HIDDEN, np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float32)
    save_file(w, str(out / "base" / "model.safetensors"), metadata={"format": "pt"})

    print(f"{n} training records ({total / 1e6:.1f} MB of {len(train_texts)} files), "
          f"held out {', '.join(HELD)}; vocab {vocab}; written under {out}")
    print("then:")
    print(f"  lathe data import {out}/train.jsonl --name pystd")
    print("  lathe data view create pystd --sql 'select text from pystd' --format text")
    print(f"  lathe train --model {out}/base --view pystd --method full --max-len 384 --packing "
          "--micro-batch 8 --grad-accum 1 --lr 1e-3 --epochs 1")
    print("  lathe quant report RUN --view pystd --types q8_0,q4_k_m,q3_k_m,q2_k,iq4_xs --eval-tokens 32768")
    print(f"  lathe quant report RUN --text {out}/held.txt --types q4_k_m,q3_k_m,q2_k,iq4_xs "
          "--imatrix pystd --imatrix-tokens 100000 --eval-tokens 45000")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
