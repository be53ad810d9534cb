//! One training step and the figures around it: micro-batches padded into tensors, the masked
//! loss, forward and backward with gradient accumulation (and gradient checkpointing, recomputing
//! a block in backward), the eval loss and greedy exact match.

use candle_core::{Device, Tensor, Var, D};

use super::model::{Ctx, Model};
use super::rng::Rng;
use super::text::{Encoded, TextCodec};
use crate::engine::data::views::Example;

pub(super) struct Batch {
    pub(super) ids: Tensor,
    pub(super) targets: Tensor,
    pub(super) weights: Tensor,
    pub(super) tokens: usize,
    pub(super) trained: f64,
}

pub(super) fn make_batch(units: &[&Encoded], pad: u32, device: &Device) -> candle_core::Result<Batch> {
    let t = units.iter().map(|u| u.ids.len() - 1).max().unwrap_or(1).max(1);
    let b = units.len();
    let mut ids = vec![pad; b * t];
    let mut tg = vec![pad; b * t];
    let mut w = vec![0f32; b * t];
    let mut tokens = 0;
    for (r, u) in units.iter().enumerate() {
        let n = u.ids.len() - 1;
        tokens += n;
        for j in 0..n {
            ids[r * t + j] = u.ids[j];
            tg[r * t + j] = u.ids[j + 1];
            w[r * t + j] = if u.train[j + 1] { 1.0 } else { 0.0 };
        }
    }
    let trained = w.iter().map(|&x| x as f64).sum();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        targets: Tensor::from_vec(tg, (b, t), device)?,
        weights: Tensor::from_vec(w, (b, t), device)?,
        tokens,
        trained,
    })
}

/// Sum over tokens of -log p(target), weighted by the loss mask.
pub(super) fn loss_sum(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = lsm.gather(&targets.unsqueeze(2)?.contiguous()?, 2)?.squeeze(2)?;
    (picked * weights)?.sum_all()?.neg()
}

pub(super) fn block_ctx(train: bool, base: Rng, i: usize) -> Ctx {
    Ctx { train, rng: Rng::derive(base.0, 7, i as u64), inputs: None }
}

/// Forward and backward of one micro-batch; adds d(loss_sum / norm)/dθ into `acc`. Returns the
/// unnormalised loss sum.
pub(super) fn micro_step(model: &Model, b: &Batch, norm: f64, rng: Rng, gc: bool, train: bool, acc: &mut [Option<Tensor>]) -> candle_core::Result<f64> {
    let vars = &model.trainable;
    let (_, t) = b.ids.dims2()?;
    let tabs = model.rope_tables(t)?;
    let mut add = |grads: &candle_core::backprop::GradStore| -> candle_core::Result<()> {
        for (i, (_, v)) in vars.iter().enumerate() {
            if let Some(g) = grads.get(v.as_tensor()) {
                acc[i] = Some(match acc[i].take() {
                    Some(a) => (a + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    };
    let n = model.blocks.len();
    let mut head_ctx = block_ctx(train, rng, n);
    if !gc {
        let mut x = model.embed(&b.ids)?;
        for i in 0..n {
            x = model.block(i, &x, &tabs, &mut block_ctx(train, rng, i))?;
        }
        let ls = match model.head_loss(&x, &b.targets, &b.weights)? {
            Some(ls) => ls,
            None => loss_sum(&model.head(&x, &mut head_ctx)?, &b.targets, &b.weights)?,
        };
        let value = ls.to_scalar::<f32>()? as f64;
        let grads = (ls / norm)?.backward()?;
        add(&grads)?;
        return Ok(value);
    }
    // Gradient checkpointing: keep only each block's input, recompute the block in backward.
    let x0 = model.embed(&b.ids)?;
    let mut inputs: Vec<Tensor> = vec![x0.detach()];
    for i in 0..n {
        let y = model.block(i, &inputs[i], &tabs, &mut block_ctx(train, rng, i))?.detach();
        inputs.push(y);
    }
    let h = Var::from_tensor(&inputs[n])?;
    let ls = match model.head_loss(h.as_tensor(), &b.targets, &b.weights)? {
        Some(ls) => ls,
        None => loss_sum(&model.head(h.as_tensor(), &mut head_ctx)?, &b.targets, &b.weights)?,
    };
    let value = ls.to_scalar::<f32>()? as f64;
    let grads = (ls / norm)?.backward()?;
    add(&grads)?;
    let mut g = grads.get(h.as_tensor()).cloned();
    drop(grads);
    for i in (0..n).rev() {
        let Some(gy) = g.take() else { break };
        let xi = Var::from_tensor(&inputs[i])?;
        let y = model.block(i, xi.as_tensor(), &tabs, &mut block_ctx(train, rng, i))?;
        let grads = (y * &gy)?.sum_all()?.backward()?;
        add(&grads)?;
        g = grads.get(xi.as_tensor()).cloned();
        inputs.truncate(i + 1);
    }
    if let Some(gx) = g {
        if x0.track_op() {
            let grads = (x0 * gx)?.sum_all()?.backward()?;
            add(&grads)?;
        }
    }
    Ok(value)
}

/// Mean token loss over `units` (no dropout).
pub fn mean_loss(model: &Model, units: &[Encoded], micro: usize, pad: u32) -> candle_core::Result<f64> {
    let mut sum = 0.0;
    let mut count = 0.0;
    for chunk in units.chunks(micro.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().filter(|u| u.ids.len() >= 2).collect();
        if refs.is_empty() {
            continue;
        }
        let b = make_batch(&refs, pad, &model.device)?;
        let logits = model.forward(&b.ids, &mut Ctx::eval())?;
        sum += loss_sum(&logits.detach(), &b.targets, &b.weights)?.to_scalar::<f32>()? as f64;
        count += b.trained;
    }
    Ok(if count > 0.0 { sum / count } else { f64::NAN })
}

/// Greedy exact-match accuracy on examples with a checkable answer.
pub fn exact_match(model: &Model, codec: &TextCodec, examples: &[Example], max_new: usize) -> Result<(usize, usize), String> {
    let stop = codec.stop_ids();
    let mut correct = 0;
    let mut total = 0;
    for ex in examples {
        let (prompt, answer) = codec.prompt_and_answer(ex)?;
        if answer.is_empty() || prompt.is_empty() {
            continue;
        }
        let out = model.greedy(&prompt, max_new, &stop).map_err(|e| e.to_string())?;
        total += 1;
        if codec.decode(&out).trim() == answer.trim() {
            correct += 1;
        }
    }
    Ok((correct, total))
}

/// The masked mean loss of `units` as one batch and its gradients for every trainable variable,
/// in `model.trainable` order; `dropout_seed` Some turns dropout on. For gradient checks and for
/// comparing gradient checkpointing with the plain backward.
pub fn loss_and_grads(model: &Model, units: &[Encoded], pad: u32, checkpointing: bool, dropout_seed: Option<u64>) -> Result<(f64, Vec<Option<Tensor>>), String> {
    let refs: Vec<&Encoded> = units.iter().collect();
    let b = make_batch(&refs, pad, &model.device).map_err(|e| e.to_string())?;
    let mut acc = vec![None; model.trainable.len()];
    let norm = b.trained.max(1.0);
    let rng = Rng::new(dropout_seed.unwrap_or(0));
    let s = micro_step(model, &b, norm, rng, checkpointing, dropout_seed.is_some(), &mut acc)
    .map_err(|e| e.to_string())?;
    Ok((s / norm, acc))
}
