//! AdamW (decoupled weight decay, bias-corrected moments), global-norm gradient clipping and the
//! warmup + cosine schedule. lathe's own so that the moments can be checkpointed and restored
//! exactly.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of updates done (bias correction uses it).
    pub t: u64,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: &[(String, Var)], weight_decay: f64) -> candle_core::Result<AdamW> {
        let m = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        let vv = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t: 0, m, v: vv })
    }

    /// One update with learning rate `lr`. Weight decay skips 1-D tensors (biases, norms), as
    /// transformers' Trainer does.
    pub fn step(&mut self, vars: &[(String, Var)], grads: &[Tensor], lr: f64) -> candle_core::Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, ((_, var), g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let p = var.as_tensor().detach();
            let upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let mut newp = (&p - (upd * lr)?)?;
            if self.weight_decay > 0.0 && p.rank() > 1 {
                newp = (newp - (&p * (lr * self.weight_decay))?)?;
            }
            var.set(&newp)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    pub fn state(&self, vars: &[(String, Var)]) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    pub fn restore(&mut self, vars: &[(String, Var)], state: &BTreeMap<String, Tensor>, t: u64) -> Result<(), String> {
        for (i, (name, _)) in vars.iter().enumerate() {
            let m = state.get(&format!("m.{name}")).ok_or_else(|| format!("the checkpoint's optimizer state lacks {name}"))?;
            let v = state.get(&format!("v.{name}")).ok_or_else(|| format!("the checkpoint's optimizer state lacks {name}"))?;
            self.m[i] = m.clone();
            self.v[i] = v.clone();
        }
        self.t = t;
        Ok(())
    }
}

/// The global L2 norm of the gradients; scales them down to `max_norm` when above it (and
/// `max_norm` > 0). Returns the norm before clipping.
pub fn clip(grads: &mut [Tensor], max_norm: f64) -> candle_core::Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

/// Linear warmup to `lr`, then cosine decay to `lr * min_ratio` at `total` steps. `step` counts
/// from 0 (the learning rate of the first update is lr/warmup when warming up).
pub fn schedule(step: usize, total: usize, warmup: usize, lr: f64, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup.min(step)) as f64 / span as f64).min(1.0);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    lr * (min_ratio + (1.0 - min_ratio) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((schedule(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((schedule(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!(schedule(55, 100, 10, 1.0, 0.0) < 0.51 && schedule(55, 100, 10, 1.0, 0.0) > 0.49);
        assert!(schedule(100, 100, 10, 1.0, 0.1) - 0.1 < 1e-9);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap()];
        let n = clip(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let v = g[0].to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5);
    }

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient() {
        let var = Var::new(&[[1f32, -1.0]], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let mut opt = AdamW::new(&vars, 0.0).unwrap();
        opt.step(&vars, &[Tensor::new(&[[0.5f32, -2.0]], &Device::Cpu).unwrap()], 0.1).unwrap();
        let v = var.as_tensor().to_vec2::<f32>().unwrap();
        assert!((v[0][0] - 0.9).abs() < 1e-5 && (v[0][1] + 0.9).abs() < 1e-5, "{v:?}");
    }
}
