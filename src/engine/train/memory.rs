//! Memory: what a training configuration needs (checked before a run starts). The allocator
//! settings the trainer uses live in `engine/alloc.rs`.

use super::base::BasePrecision;
use super::config::{Family, ModelConfig};
use super::spec::TrainConfig;

/// Memory a configuration needs, in bytes: the weights (projections at the base precision, the
/// rest f32 or as stored; a held base also has one projection in f32 in flight during a
/// product), optimizer state, activations, logits.
pub fn memory_estimate(mcfg: &ModelConfig, cfg: &TrainConfig) -> u64 {
    let h = mcfg.hidden_size as u64;
    let i = mcfg.intermediate_size as u64;
    let l = mcfg.num_layers as u64;
    let v = mcfg.vocab_size as u64;
    let kv = (mcfg.num_kv_heads * mcfg.head_dim) as u64;
    // q and o, k and v, and the MLP: gate, up and down (Phi's fc1 and fc2 have no gate).
    let mlp = if mcfg.family == Family::Phi { 2 } else { 3 };
    let per_layer = 2 * h * h + 2 * h * kv + mlp * h * i;
    let heads_out = if mcfg.tie_word_embeddings { 0 } else { v * h };
    let base = per_layer * l + v * h + heads_out;
    // A frozen embedding table and head stay in the 16-bit float the checkpoint stores.
    let sixteen = matches!(mcfg.dtype.as_deref(), Some("bfloat16" | "float16"));
    let table_bytes = if cfg.method != "full" && sixteen { 2 } else { 4 };
    let weight_bytes = match cfg.quant_base {
        _ if cfg.method == "full" => 4 * base,
        BasePrecision::F32 => 4 * per_layer * l + table_bytes * (v * h + heads_out),
        p => (p.bytes_per_weight() * (per_layer * l) as f64) as u64 + table_bytes * (v * h + heads_out) + 4 * h * i.max(h),
    };
    let trainable = if cfg.method == "full" {
        base
    } else {
        let r = cfg.lora_r as u64;
        let n_t = if cfg.lora_targets.is_empty() { 7 } else { cfg.lora_targets.len() as u64 };
        l * n_t * r * (h + i.max(h))
    };
    let tokens = (cfg.micro_batch * cfg.max_len) as u64;
    let heads = mcfg.num_heads as u64;
    // Per block, what the graph keeps for the backward (lathe's fused ops keep their inputs and
    // outputs only): about 9 hidden-wide, 4 KV-wide and 3 MLP-wide tensors per token; and, one
    // block at a time, the attention backward's three score-sized tensors (the probabilities,
    // their gradient and the scores' gradient; calibrated with `lathe bench train`).
    let act_layer = tokens * (9 * h + 4 * kv + 3 * i);
    let scores = (cfg.micro_batch as u64) * heads * (cfg.max_len as u64).pow(2) * 3;
    let act = scores + if cfg.grad_checkpointing { tokens * h * l + act_layer } else { act_layer * l };
    // The logits, their log-softmax and gradients when the head trains (full fine-tuning); a
    // frozen head's fused loss holds one block of the head in f32 and its logits instead.
    let block = ((8u64 << 20) / h).max(64).min(v);
    let logits = if cfg.method == "full" { tokens * v * 4 } else { block * h + 2 * tokens * block };
    // Per trainable value: its gradient (f32) and the optimizer's two moments.
    let state = (4.0 + cfg.optim.bytes_per_value()) * trainable as f64;
    // The process itself (the catalog, the tokenizer, code and buffers): about 96 MB measured for a
    // run of the tiny test model (80 MB before lathe linked Lance's search and index code, whose
    // relocated tables are resident from the start).
    weight_bytes + state as u64 + 4 * (act + logits) + 96 * (1 << 20)
}

/// What the same run needs as LoRA on a 4-bit base (QLoRA), when `cfg` holds its base in f32:
/// what a run too big for memory is offered instead.
pub fn with_4bit_base(mcfg: &ModelConfig, cfg: &TrainConfig) -> Option<u64> {
    (cfg.quant_base == BasePrecision::F32).then(|| {
        let cheaper = TrainConfig { quant_base: BasePrecision::Nf4, method: "lora".into(), ..cfg.clone() };
        memory_estimate(mcfg, &cheaper)
    })
}
