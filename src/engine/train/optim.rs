//! AdamW (decoupled weight decay, bias-corrected moments), with its moments in f32 or, as
//! bitsandbytes' 8-bit AdamW keeps them, block-wise quantized to 8 bits; global-norm gradient
//! clipping; the warmup + cosine schedule. lathe's own so that the moments can be checkpointed
//! and restored exactly.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which optimizer a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    #[default]
    AdamW,
    /// AdamW with 8-bit moments: the first on bitsandbytes' signed dynamic code, the second on its
    /// unsigned one, each block of 256 with its own absmax; tensors under 4096 values stay f32
    /// (bitsandbytes' `min_8bit_size`).
    #[serde(rename = "adamw8bit")]
    AdamW8bit,
}

impl Optimizer {
    pub const ALL: [Optimizer; 2] = [Optimizer::AdamW, Optimizer::AdamW8bit];

    pub fn name(self) -> &'static str {
        match self {
            Optimizer::AdamW => "adamw",
            Optimizer::AdamW8bit => "adamw8bit",
        }
    }

    pub fn parse(name: &str) -> Result<Optimizer, String> {
        Optimizer::ALL
            .into_iter()
            .find(|o| o.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("{name:?} is not an optimizer; use adamw or adamw8bit."))
    }

    /// Bytes of optimizer state per trainable value.
    pub fn bytes_per_value(self) -> f64 {
        match self {
            Optimizer::AdamW => 8.0,
            Optimizer::AdamW8bit => 2.0 + 8.0 / BLOCK as f64,
        }
    }
}

/// Values per 8-bit block, and the smallest tensor whose moments are kept in 8 bits.
const BLOCK: usize = 256;
const MIN_8BIT: usize = 4096;

/// bitsandbytes' unsigned dynamic 8-bit code book (`create_dynamic_map(signed=False)`), as bits.
const UNSIGNED_BITS: [u32; 256] = [
    0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e,
    0x37e171a0, 0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b,
    0x394154ca, 0x397c5049, 0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50,
    0x3a264c30, 0x3a350b10, 0x3a43c9ef, 0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106,
    0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1, 0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540,
    0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a, 0x3ba66666, 0x3baf9db2, 0x3bb8d4fd,
    0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5, 0x3bf9580f, 0x3c0147ae,
    0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937, 0x3c2f5c2a,
    0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
    0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000,
    0x3d0dc28f, 0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b,
    0x3d3bd70a, 0x3d41999a, 0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7,
    0x3d69eb87, 0x3d6fae15, 0x3d7570a3, 0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8,
    0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7, 0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6,
    0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c, 0x3db170a4, 0x3db451eb, 0x3db73333,
    0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2, 0x3dcb5c29, 0x3dd40000,
    0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666, 0x3e23999a,
    0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
    0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666,
    0x3e8f0000, 0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333,
    0x3eabcccc, 0x3eaf6666, 0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000,
    0x3ec8999a, 0x3ecc3333, 0x3ecfcccc, 0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc,
    0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333, 0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999,
    0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc, 0x3f0a199a, 0x3f0be666, 0x3f0db334,
    0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000, 0x3f1a4ccd, 0x3f1c199a,
    0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334, 0x3f2a8000,
    0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
    0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc,
    0x3f49199a, 0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334,
    0x3f578000, 0x3f594ccc, 0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a,
    0x3f65e666, 0x3f67b334, 0x3f698000, 0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000,
    0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334, 0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
];

/// One tensor's moments quantized: 8-bit codes and an absmax per block of 256.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub codes: Vec<u8>,
    pub absmax: Vec<f32>,
}

/// A trainable tensor's first and second moments.
#[derive(Debug, Clone)]
pub enum Moments {
    F32 { m: Tensor, v: Tensor },
    Q8 { m: Quantized, v: Quantized },
}

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Number of updates done (bias correction uses it).
    pub t: u64,
    pub moments: Vec<Moments>,
}

impl AdamW {
    pub fn new(vars: &[(String, Var)], weight_decay: f64, kind: Optimizer) -> candle_core::Result<AdamW> {
        let moments = vars
            .iter()
            .map(|(_, v)| match kind {
                Optimizer::AdamW8bit if v.elem_count() >= MIN_8BIT => {
                    let n = v.elem_count();
                    let zero = || Quantized { codes: vec![zero_code(true); n], absmax: vec![0.0; n.div_ceil(BLOCK)] };
                    Ok(Moments::Q8 { m: zero(), v: Quantized { codes: vec![0; n], ..zero() } })
                }
                _ => Ok(Moments::F32 { m: v.zeros_like()?, v: v.zeros_like()? }),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t: 0, moments })
    }

    /// Bytes the moments hold.
    pub fn state_bytes(&self) -> usize {
        self.moments
            .iter()
            .map(|m| match m {
                Moments::F32 { m, v } => 4 * (m.elem_count() + v.elem_count()),
                Moments::Q8 { m, v } => m.codes.len() + v.codes.len() + 4 * (m.absmax.len() + v.absmax.len()),
            })
            .sum()
    }

    /// One update with learning rate `lr`. Weight decay skips 1-D tensors (biases, norms), as
    /// transformers' Trainer does.
    pub fn step(&mut self, vars: &[(String, Var)], grads: &[Tensor], lr: f64) -> candle_core::Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, ((_, var), g)) in vars.iter().zip(grads).enumerate() {
            let decay = if var.rank() > 1 { self.weight_decay } else { 0.0 };
            match &mut self.moments[i] {
                Moments::F32 { m, v } => {
                    let m2 = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
                    let v2 = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                    let p = var.as_tensor().detach();
                    let upd = ((&m2 / bc1)? / ((&v2 / bc2)?.sqrt()? + self.eps)?)?;
                    let mut newp = (&p - (upd * lr)?)?;
                    if decay > 0.0 {
                        newp = (newp - (&p * (lr * decay))?)?;
                    }
                    var.set(&newp)?;
                    *m = m2;
                    *v = v2;
                }
                Moments::Q8 { m, v } => {
                    let h = Hyper { beta1: self.beta1 as f32, beta2: self.beta2 as f32, eps: self.eps as f32, bc1: bc1 as f32, bc2: bc2 as f32, lr: lr as f32, decay: decay as f32 };
                    let mut p: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
                    let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
                    step_8bit(&mut p, &g, m, v, &h);
                    var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
                }
            }
        }
        Ok(())
    }

    /// The moments as tensors for a checkpoint: f32 ones as `m.NAME` / `v.NAME`; 8-bit ones as
    /// their codes (`m8.NAME`, u8) and absmax (`m8s.NAME`, f32), restored bit for bit.
    pub fn state(&self, vars: &[(String, Var)]) -> candle_core::Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in vars.iter().enumerate() {
            match &self.moments[i] {
                Moments::F32 { m, v } => {
                    out.insert(format!("m.{name}"), m.clone());
                    out.insert(format!("v.{name}"), v.clone());
                }
                Moments::Q8 { m, v } => {
                    for (key, q) in [("m8", m), ("v8", v)] {
                        out.insert(format!("{key}.{name}"), Tensor::from_vec(q.codes.clone(), q.codes.len(), &Device::Cpu)?);
                        out.insert(format!("{key}s.{name}"), Tensor::from_vec(q.absmax.clone(), q.absmax.len(), &Device::Cpu)?);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn restore(&mut self, vars: &[(String, Var)], state: &BTreeMap<String, Tensor>, t: u64) -> Result<(), String> {
        let get = |key: String| state.get(&key).ok_or_else(|| format!("the checkpoint's optimizer state lacks {key}; was it written by another optimizer?"));
        for (i, (name, _)) in vars.iter().enumerate() {
            match &mut self.moments[i] {
                Moments::F32 { m, v } => {
                    *m = get(format!("m.{name}"))?.clone();
                    *v = get(format!("v.{name}"))?.clone();
                }
                Moments::Q8 { m, v } => {
                    for (key, q) in [("m8", m), ("v8", v)] {
                        let codes = get(format!("{key}.{name}"))?;
                        let absmax = get(format!("{key}s.{name}"))?;
                        if codes.dtype() != DType::U8 || codes.elem_count() != q.codes.len() || absmax.elem_count() != q.absmax.len() {
                            return Err(format!("the checkpoint's 8-bit state for {name} does not match the model; it cannot be resumed."));
                        }
                        q.codes = codes.to_vec1().map_err(|e| e.to_string())?;
                        q.absmax = absmax.to_vec1().map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        self.t = t;
        Ok(())
    }
}

/// The scalars of one update.
struct Hyper {
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,
    bc2: f32,
    lr: f32,
    decay: f32,
}

/// One AdamW update of a tensor with 8-bit moments, a block of 256 at a time on every core: the
/// block's moments are dequantized, updated with its gradient, and quantized again with the
/// block's new absmax (nearest code).
fn step_8bit(p: &mut [f32], g: &[f32], m: &mut Quantized, v: &mut Quantized, h: &Hyper) {
    let (signed, unsigned) = (codes(true), codes(false));
    p.par_chunks_mut(BLOCK)
        .zip(g.par_chunks(BLOCK))
        .zip(m.codes.par_chunks_mut(BLOCK).zip(m.absmax.par_iter_mut()))
        .zip(v.codes.par_chunks_mut(BLOCK).zip(v.absmax.par_iter_mut()))
        .for_each(|(((p, g), (mc, ma)), (vc, va))| {
            let mut mf = [0f32; BLOCK];
            let mut vf = [0f32; BLOCK];
            for j in 0..p.len() {
                let m0 = signed[mc[j] as usize] * *ma;
                let v0 = unsigned[vc[j] as usize] * *va;
                let m1 = h.beta1 * m0 + (1.0 - h.beta1) * g[j];
                let v1 = h.beta2 * v0 + (1.0 - h.beta2) * g[j] * g[j];
                let upd = (m1 / h.bc1) / ((v1 / h.bc2).sqrt() + h.eps);
                p[j] = p[j] - h.lr * upd - h.lr * h.decay * p[j];
                mf[j] = m1;
                vf[j] = v1;
            }
            *ma = quantize_block(&mf[..p.len()], mc, true);
            *va = quantize_block(&vf[..p.len()], vc, false);
        });
}

/// Quantizes one block to the nearest codes; returns its absmax.
fn quantize_block(x: &[f32], out: &mut [u8], signed: bool) -> f32 {
    let am = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let mids = midpoints(signed);
    let inv = if am > 0.0 { 1.0 / am } else { 0.0 };
    for (o, v) in out.iter_mut().zip(x) {
        *o = mids.partition_point(|&m| m < v * inv) as u8;
    }
    am
}

/// The code book of the first (signed) or second (unsigned) moment.
fn codes(signed: bool) -> &'static [f32; 256] {
    static S: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    static U: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    if signed {
        S.get_or_init(super::nf4::dynamic)
    } else {
        U.get_or_init(|| UNSIGNED_BITS.map(f32::from_bits))
    }
}

fn midpoints(signed: bool) -> &'static [f32; 255] {
    static S: std::sync::OnceLock<[f32; 255]> = std::sync::OnceLock::new();
    static U: std::sync::OnceLock<[f32; 255]> = std::sync::OnceLock::new();
    let make = |c: &[f32; 256]| std::array::from_fn(|i| 0.5 * (c[i] + c[i + 1]));
    if signed {
        S.get_or_init(|| make(codes(true)))
    } else {
        U.get_or_init(|| make(codes(false)))
    }
}

/// The code of zero.
fn zero_code(signed: bool) -> u8 {
    codes(signed).iter().position(|&c| c == 0.0).unwrap_or(0) as u8
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
        let mut opt = AdamW::new(&vars, 0.0, Optimizer::AdamW).unwrap();
        opt.step(&vars, &[Tensor::new(&[[0.5f32, -2.0]], &Device::Cpu).unwrap()], 0.1).unwrap();
        let v = var.as_tensor().to_vec2::<f32>().unwrap();
        assert!((v[0][0] - 0.9).abs() < 1e-5 && (v[0][1] + 0.9).abs() < 1e-5, "{v:?}");
    }

    /// 8-bit moments follow f32 AdamW closely over many steps, take about a quarter of the
    /// memory, and a state saved and restored continues bit for bit.
    #[test]
    fn adamw8bit_tracks_adamw_and_restores_exactly() {
        let n = 64 * 128;
        let start: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
        let var = |vals: &[f32]| Var::from_tensor(&Tensor::from_vec(vals.to_vec(), (64, 128), &Device::Cpu).unwrap()).unwrap();
        let (a, b) = (vec![("w".to_string(), var(&start))], vec![("w".to_string(), var(&start))]);
        let mut full = AdamW::new(&a, 0.01, Optimizer::AdamW).unwrap();
        let mut q8 = AdamW::new(&b, 0.01, Optimizer::AdamW8bit).unwrap();
        assert!(matches!(q8.moments[0], Moments::Q8 { .. }));
        assert!(q8.state_bytes() * 10 <= full.state_bytes() * 3, "{} vs {}", q8.state_bytes(), full.state_bytes());
        let grad = |t: usize| Tensor::from_vec((0..n).map(|i| (((i * 31 + t * 17) % 97) as f32 / 97.0 - 0.45) * 0.02).collect::<Vec<f32>>(), (64, 128), &Device::Cpu).unwrap();
        for t in 0..30 {
            full.step(&a, &[grad(t)], 1e-3).unwrap();
            q8.step(&b, &[grad(t)], 1e-3).unwrap();
        }
        let (pa, pb) = (a[0].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), b[0].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let moved: f32 = pa.iter().zip(&start).map(|(x, s)| (x - s).abs()).sum();
        let off: f32 = pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum();
        assert!(off < 0.05 * moved, "8-bit drifted {off} against a total move of {moved}");
        // Save, restore into a fresh optimizer, and both take the same next step.
        let saved = q8.state(&b).unwrap();
        let c = vec![("w".to_string(), var(&pb))];
        let mut again = AdamW::new(&c, 0.01, Optimizer::AdamW8bit).unwrap();
        again.restore(&c, &saved, q8.t).unwrap();
        q8.step(&b, &[grad(99)], 1e-3).unwrap();
        again.step(&c, &[grad(99)], 1e-3).unwrap();
        assert_eq!(b[0].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), c[0].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap());
        // A checkpoint from the f32 optimizer does not restore into the 8-bit one.
        let e = AdamW::new(&c, 0.01, Optimizer::AdamW8bit).unwrap().restore(&c, &full.state(&a).unwrap(), 1).unwrap_err();
        assert!(e.contains("another optimizer"), "{e}");
    }
}
