"""The peer for a QLoRA step: one QLoRA training step on the CPU in PyTorch + peft + bitsandbytes.
Loads a Hugging Face folder (config.json + model.safetensors in bf16, Llama or Phi) with the
projections quantized to NF4 (bnb Linear4bit, uint8 storage, block 64, no double quantization,
float32 compute); embeddings, norms and lm_head stay float32. Then prepare_model_for_kbit_training
(freezes everything, casts the remaining bf16/f16 parameters to float32), LoRA r (alpha 2r, dropout
0.05) on every projection (Llama: q,k,v,o,gate,up,down; Phi: q,k,v,dense,fc1,fc2), random token ids
(seed 0), cross entropy on shifted labels, clip grad norm 1.0, AdamW (torch, or bitsandbytes
AdamW8bit with uint8 state) at lr 2e-4, weight decay 0.01. One warm-up step, then --steps timed steps.
Prints one JSON line: tokens per second over the timed steps, peak RSS in bytes, load time, RSS
right after the imports, and the size of the optimizer state.

python3 benches/peer_qlora_step.py --model DIR --steps 3 --seq 256 [--gc] [--optim adamw|adamw8bit] [--r 16] [--batch 1]
"""
import argparse
import json
import logging
import resource
import time

import torch

# bitsandbytes warns at import that the optional `kernels` package is missing; that kernel only
# serves its inference-only (no grad) AVX512-BF16 path, which training never takes.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
import bitsandbytes as bnb
import peft
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig


def rss_now():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


RSS_AFTER_IMPORT = rss_now()

TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
}


def check_quantized(model, targets):
    """Every targeted projection must be a bnb Linear4bit holding a uint8 Params4bit weight in the
    training layout (not repacked for the CPU inference kernel)."""
    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            w = mod.weight
            assert isinstance(w, bnb.nn.Params4bit) and w.dtype == torch.uint8, name
            assert not getattr(w.quant_state, "packing_format_for_cpu", False), name
            n += 1
    want = sum(1 for name, mod in model.named_modules()
               if name.rsplit(".", 1)[-1] == "base_layer" and name.split(".")[-2] in targets)
    assert n > 0 and n == want, (n, want)
    return n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="Hugging Face folder (config.json + model.safetensors)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--gc", action="store_true", help="gradient checkpointing")
    p.add_argument("--optim", choices=["adamw", "adamw8bit"], default="adamw")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    a = p.parse_args()
    torch.manual_seed(0)

    model_type = AutoConfig.from_pretrained(a.model).model_type
    targets = TARGETS["phi" if model_type == "phi" else "llama"]
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        a.model,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=False,
                                               bnb_4bit_compute_dtype=torch.float32),
        device_map="cpu", dtype=torch.float32)
    load_s = time.perf_counter() - t
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.gc,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.05,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    check_quantized(model, targets)
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params)
    if a.optim == "adamw":
        opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.01)
    else:
        opt = bnb.optim.AdamW8bit(params, lr=2e-4, weight_decay=0.01)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq + 1))
    inputs, labels = ids[:, :-1], ids[:, 1:]

    def step(check=False):
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
        loss.backward()
        if check:  # lora_B starts at zero, so only its gradients are nonzero on the first step
            for n, q in model.named_parameters():
                if q.requires_grad and "lora_B" in n:
                    assert q.grad is not None and q.grad.abs().sum() > 0, n
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()

    step(check=True)  # warm-up
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t
    check_quantized(model, targets)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state_bytes, by_dtype = 0, {}
    for s in opt.state.values():
        for v in s.values():
            if torch.is_tensor(v):
                state_bytes += v.nbytes
                k = str(v.dtype).replace("torch.", "")
                by_dtype[k] = by_dtype.get(k, 0) + v.nbytes
    print(json.dumps({"tokens_per_s": a.seq * a.batch * a.steps / dt, "peak_rss": peak, "load_s": load_s,
                      "rss_after_import": RSS_AFTER_IMPORT, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "transformers": transformers.__version__,
                      "peft": peft.__version__, "bitsandbytes": bnb.__version__, "optim": a.optim,
                      "optim_state_bytes": state_bytes, "optim_state_by_dtype": by_dtype}))


if __name__ == "__main__":
    main()
