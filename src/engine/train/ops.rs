//! lathe's own differentiable ops (CPU), each a candle custom op with its own backward. candle's
//! autograd keeps every intermediate tensor of the forward alive until the backward ends; an op
//! built from a dozen small candle ops keeps a dozen tensors per layer, a custom op only its
//! inputs and its output. Forward and backward run candle ops on untracked tensors inside.

use candle_core::{CpuStorage, Device, Layout, Shape, Tensor, D};

use super::base::BaseWeight;

type Result<T> = candle_core::Result<T>;

/// A custom op's input as a tensor that no graph tracks (a copy of its contiguous span).
fn input(s: &CpuStorage, l: &Layout, op: &str) -> Result<Tensor> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg(format!("{op} needs contiguous inputs")))?;
    Tensor::from_vec(s.as_slice::<f32>()?[a..b].to_vec(), l.shape(), &Device::Cpu)
}

fn output(t: &Tensor) -> Result<(CpuStorage, Shape)> {
    Ok((CpuStorage::F32(t.flatten_all()?.to_vec1::<f32>()?), t.shape().clone()))
}

/// `f` over the f32 values of a CPU tensor, made contiguous first (no copy when it is).
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(candle_core::Error::Msg("lathe's training ops run on the CPU".into()));
    };
    let (a, b) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("a contiguous tensor has no contiguous span".into()))?;
    Ok(f(&cpu.as_slice::<f32>()?[a..b]))
}

/// The output head and the masked loss in one op, for a frozen head (LoRA, QLoRA): over x (rows,
/// hidden), Σ w·(logsumexp(ℓ) − ℓ[target]) with ℓ = x·Wᵀ + bias, a block of vocabulary rows of W
/// at a time (an online logsumexp across blocks), so the (rows, vocab) logits never exist whole
/// and a 16-bit head is converted to f32 one block at a time. The backward recomputes each block's
/// logits: dx = g·w·(softmax(ℓ) − onehot)·W, with the logsumexp the forward kept. Through candle's
/// ops the logits, their log-softmax and its gradient stayed alive at once: at TinyLlama shapes
/// and 512 tokens, the QLoRA step's peak fell from 2.08 to 1.64 GB with this op.
pub struct HeadLoss {
    w: BaseWeight,
    bias: Option<Tensor>,
    targets: Vec<u32>,
    weights: Vec<f32>,
    /// Vocabulary rows of W per block.
    block: usize,
    /// Each row's logsumexp, from the forward, for the backward.
    lse: std::sync::Mutex<Vec<f32>>,
}

/// Vocabulary rows per block of `HeadLoss`: about 32 MB of W in f32 (3,276 rows at Phi-2's 2,560).
fn head_block(hidden: usize) -> usize {
    ((8 << 20) / hidden.max(1)).max(64)
}

impl HeadLoss {
    pub fn new(w: BaseWeight, bias: Option<Tensor>, targets: Vec<u32>, weights: Vec<f32>) -> Result<HeadLoss> {
        let (_, hidden) = w.dims()?;
        Ok(HeadLoss { w, bias, targets, weights, block: head_block(hidden), lse: Default::default() })
    }

    /// The same op with `block` vocabulary rows per block (tests cross block edges with it).
    pub fn with_block(self, block: usize) -> HeadLoss {
        HeadLoss { block: block.max(1), ..self }
    }

    /// For each block of the vocabulary: its first row, its size n, and the logits (rows, n).
    fn blocks(&self, x: &Tensor, mut each: impl FnMut(usize, usize, &mut [f32]) -> Result<()>) -> Result<()> {
        let (vocab, _) = self.w.dims()?;
        for start in (0..vocab).step_by(self.block) {
            let n = self.block.min(vocab - start);
            let mut l = x.matmul(&self.w.rows(start, n)?.t()?)?;
            if let Some(b) = &self.bias {
                l = l.broadcast_add(&b.narrow(0, start, n)?)?;
            }
            each(start, n, &mut l.flatten_all()?.to_vec1::<f32>()?)?;
        }
        Ok(())
    }

    /// Each row's logsumexp over the vocabulary and its target's logit.
    fn lse_and_picked(&self, x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
        use rayon::prelude::*;
        // (running max, running sum of exp(ℓ − max), the target's logit) per row.
        let mut state = vec![(f32::NEG_INFINITY, 0f32, 0f32); x.dim(0)?];
        self.blocks(x, |start, n, logits| {
            state.par_iter_mut().zip(logits.par_chunks(n)).enumerate().for_each(|(r, ((m, sum, picked), row))| {
                if self.weights[r] == 0.0 {
                    return;
                }
                let bm = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let nm = m.max(bm);
                *sum = *sum * (*m - nm).exp() + row.iter().map(|&v| (v - nm).exp()).sum::<f32>();
                *m = nm;
                let t = self.targets[r] as usize;
                if (start..start + n).contains(&t) {
                    *picked = row[t - start];
                }
            });
            Ok(())
        })?;
        Ok(state.into_iter().map(|(m, s, p)| (m + s.ln(), p)).unzip())
    }
}

impl candle_core::CustomOp1 for HeadLoss {
    fn name(&self) -> &'static str {
        "head-loss"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = input(s, l, "head-loss")?;
        let (lse, picked) = self.lse_and_picked(&x)?;
        let total: f64 = self.weights.iter().zip(lse.iter().zip(&picked)).filter(|(w, _)| **w != 0.0).map(|(w, (l, p))| (w * (l - p)) as f64).sum();
        *self.lse.lock().map_err(|_| candle_core::Error::Msg("head-loss state poisoned".into()))? = lse;
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        use rayon::prelude::*;
        let x = x.detach();
        let g = g.to_scalar::<f32>()?;
        let mut lse = std::mem::take(&mut *self.lse.lock().map_err(|_| candle_core::Error::Msg("head-loss state poisoned".into()))?);
        if lse.len() != x.dim(0)? {
            lse = self.lse_and_picked(&x)?.0;
        }
        let mut dx: Option<Tensor> = None;
        self.blocks(&x, |start, n, logits| {
            logits.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
                let w = self.weights[r] * g;
                if w == 0.0 {
                    row.fill(0.0);
                    return;
                }
                row.iter_mut().for_each(|v| *v = w * (*v - lse[r]).exp());
                let t = self.targets[r] as usize;
                if (start..start + n).contains(&t) {
                    row[t - start] -= w;
                }
            });
            let rows = logits.len() / n;
            let part = Tensor::from_slice(logits, (rows, n), &Device::Cpu)?.matmul(&self.w.rows(start, n)?)?;
            dx = Some(match dx.take() {
                Some(acc) => (acc + part)?,
                None => part,
            });
            Ok(())
        })?;
        Ok(dx)
    }
}

/// Causal softmax over the last dimension of attention scores (b, h, t, t): row i keeps columns
/// 0..=i. One pass forward, keeping only its output; the backward is y·(g − Σ g·y). Composing it
/// from candle ops (mask add, max, sub, exp, sum, div) would keep five score-sized tensors per
/// layer alive until the backward ends.
pub struct CausalSoftmax;

impl candle_core::CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &candle_core::CpuStorage, layout: &candle_core::Layout) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("causal-softmax needs a contiguous input".into()))?;
        let x = &storage.as_slice::<f32>()?[start..end];
        let t = *layout.shape().dims().last().unwrap_or(&1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(t).zip(x.par_chunks(t)).enumerate().for_each(|(row, (out, inp))| {
            let i = row % t;
            let keep = &inp[..=i];
            let m = keep.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, &v) in out[..=i].iter_mut().zip(keep) {
                *o = (v - m).exp();
                sum += *o;
            }
            let inv = 1.0 / sum;
            out[..=i].iter_mut().for_each(|o| *o *= inv);
        });
        Ok((candle_core::CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        causal_softmax_grad(res, grad).map(Some)
    }
}

/// The gradient through a causal softmax with output y: y·(g − Σ g·y) over each row's kept
/// columns 0..=i, zero above; one pass per row (through candle's ops: four passes over the
/// score-sized tensors, and three more of them in memory).
fn causal_softmax_grad(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let t = y.dim(D::Minus1)?;
    let g = g.contiguous()?;
    let out = with_values(y, |ys| {
        with_values(&g, |gs| {
            let mut out = vec![0f32; ys.len()];
            out.par_chunks_mut(t).zip(ys.par_chunks(t).zip(gs.par_chunks(t))).enumerate().for_each(|(row, (o, (y, g)))| {
                let i = row % t;
                let dot: f32 = y[..=i].iter().zip(&g[..=i]).map(|(a, b)| a * b).sum();
                for ((o, &y), &g) in o[..=i].iter_mut().zip(&y[..=i]).zip(&g[..=i]) {
                    *o = y * (g - dot);
                }
            });
            out
        })
    })??;
    Tensor::from_vec(out, y.shape(), &Device::Cpu)
}

/// RMSNorm, y = x / sqrt(mean(x²) + eps) · w, in one pass per row. Its backward recomputes the
/// row scale, so the graph keeps only the output (composed from candle ops it kept three
/// hidden-wide tensors per norm).
pub struct RmsNormOp {
    pub eps: f64,
}

impl candle_core::CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &candle_core::CpuStorage,
        xl: &candle_core::Layout,
        ws: &candle_core::CpuStorage,
        wl: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (xa, xb) = xl.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("rms-norm needs a contiguous input".into()))?;
        let (wa, wb) = wl.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("rms-norm needs a contiguous weight".into()))?;
        let x = &xs.as_slice::<f32>()?[xa..xb];
        let w = &ws.as_slice::<f32>()?[wa..wb];
        let h = w.len();
        let eps = self.eps as f32;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(out, row)| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let r = 1.0 / (ms + eps).sqrt();
            for ((o, &v), &wi) in out.iter_mut().zip(row).zip(w) {
                *o = v * r * wi;
            }
        });
        Ok((candle_core::CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let tracked = w.is_variable() || w.track_op();
        let (x, w) = (x.detach(), w.detach());
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let n = x.broadcast_mul(&r)?;
        let gw = g.broadcast_mul(&w)?;
        let dot = (&gw * &n)?.mean_keepdim(D::Minus1)?;
        let dx = (gw - n.broadcast_mul(&dot)?)?.broadcast_mul(&r)?;
        let dims = g.dims().len();
        let dw = if tracked { Some((g * &n)?.sum((0..dims - 1).collect::<Vec<_>>())?) } else { None };
        Ok((Some(dx), dw))
    }
}

/// silu(gate) · up in one pass; the backward recomputes the sigmoid, so the graph keeps only the
/// product (not silu(gate) too).
pub struct SwiGlu;

impl candle_core::CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &candle_core::CpuStorage,
        gl: &candle_core::Layout,
        us: &candle_core::CpuStorage,
        ul: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (ga, gb) = gl.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("swiglu needs contiguous inputs".into()))?;
        let (ua, ub) = ul.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("swiglu needs contiguous inputs".into()))?;
        let g = &gs.as_slice::<f32>()?[ga..gb];
        let u = &us.as_slice::<f32>()?[ua..ub];
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(4096).zip(g.par_chunks(4096).zip(u.par_chunks(4096))).for_each(|(out, (gc, uc))| {
            for ((o, &a), &b) in out.iter_mut().zip(gc).zip(uc) {
                *o = a / (1.0 + (-a).exp()) * b;
            }
        });
        Ok((candle_core::CpuStorage::F32(y), gl.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gate, up) = (gate.detach(), up.detach());
        let s = candle_nn::ops::sigmoid(&gate)?;
        let silu = (&gate * &s)?;
        // d silu / d gate = s · (1 + gate · (1 − s))
        let dsilu = (&s * ((&gate * s.affine(-1.0, 1.0)?)? + 1.0)?)?;
        let dgate = ((g * &up)? * dsilu)?;
        let dup = (g * silu)?;
        Ok((Some(dgate), Some(dup)))
    }
}

/// Inverted dropout on a LoRA input, its mask drawn from a seed so that the backward redraws the
/// same mask instead of keeping it.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
    pub seed: u64,
}

impl Dropout {
    /// x with each value dropped (zeroed) with probability p and the rest scaled by 1/(1−p), as
    /// PEFT's dropout does. Whether value i drops depends only on (seed, i): each SplitMix64 hash
    /// of (seed, i/4) gives four 16-bit uniforms, so p is applied in steps of 1/65536, on every
    /// core, and the backward drops the same positions by calling this again.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        use rayon::prelude::*;
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let threshold = (self.p * 65536.0).round() as u64;
        let out = with_values(x, |src| {
            // Chunks of 4096 values: whole groups of four, one task each.
            let mut out = vec![0f32; src.len()];
            out.par_chunks_mut(4096).zip(src.par_chunks(4096)).enumerate().for_each(|(c, (o, s))| {
                for (g, (o4, s4)) in o.chunks_mut(4).zip(s.chunks(4)).enumerate() {
                    let mut z = self.seed.wrapping_add(((c * 1024 + g) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    for (k, (o, s)) in o4.iter_mut().zip(s4).enumerate() {
                        if (z >> (16 * k)) & 0xffff >= threshold {
                            *o = s * keep;
                        }
                    }
                }
            });
            out
        })?;
        Tensor::from_vec(out, x.shape(), &Device::Cpu)
    }
}

/// A projection with a LoRA adapter, PEFT's y = x·Wᵀ + bias + s·(drop(x)·Aᵀ)·Bᵀ with W (and the
/// bias) frozen, over x (rows, in), A (r, in), B (out, r). The graph keeps x, A, B and y; the
/// backward recomputes drop(x)·Aᵀ (rank r, cheap). Composed from candle ops this kept the mask,
/// the dropped input, the adapter's output, its scaled copy and the sum: five more tensors the
/// size of x or y for every adapted projection.
pub struct LoraMatmul {
    pub w: BaseWeight,
    pub bias: Option<Tensor>,
    pub scale: f64,
    pub dropout: Option<Dropout>,
}

impl candle_core::CustomOp3 for LoraMatmul {
    fn name(&self) -> &'static str {
        "lora-matmul"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = input(xs, xl, "lora-matmul")?;
        let a = input(as_, al, "lora-matmul")?;
        let b = input(bs, bl, "lora-matmul")?;
        let mut y = self.w.apply(&x)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        let xd = match &self.dropout {
            Some(d) => d.apply(&x)?,
            None => x,
        };
        // The scale applies to the rank-r product, not to the (rows, out) result.
        let d = (xd.matmul(&a.t()?)? * self.scale)?.matmul(&b.t()?)?;
        output(&(y + d)?)
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, a, b) = (x.detach(), a.detach(), b.detach());
        let xd = match &self.dropout {
            Some(d) => d.apply(&x)?,
            None => x,
        };
        // With u = xd·Aᵀ (rows, r): dB = s·gᵀ·u, dA = (s·g·B)ᵀ·xd, the scale applied at rank r.
        let u = xd.matmul(&a.t()?)?;
        let db = (g.t()?.matmul(&u)? * self.scale)?;
        let gu = (g.matmul(&b)? * self.scale)?;
        let da = gu.t()?.matmul(&xd)?;
        let through = gu.matmul(&a)?;
        let through = match &self.dropout {
            Some(d) => d.apply(&through)?,
            None => through,
        };
        let dx = (self.w.apply_t(g)? + through)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

/// Causal self-attention with rotary embeddings and grouped-query heads, over the projections'
/// outputs q (b, t, heads·hd), k and v (b, t, kv_heads·hd); the result is (b, t, heads·hd), ready
/// for the output projection. The graph keeps only q, k, v and the result; the backward recomputes
/// the rotation, the repeated key/value heads and the attention probabilities (one extra q·kᵀ per
/// layer). Composed from candle ops, every layer kept the rotated q and k with their partial
/// products, the repeated k and v, the scores, the probabilities and two transposed copies: for
/// TinyLlama shapes at 256 tokens, about 60 MB per layer.
pub struct Attention {
    /// (t, half) each, for positions 0..t.
    pub cos: Tensor,
    pub sin: Tensor,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f64,
}

impl Attention {
    /// (b, t, h·hd) -> (b, h, t, hd)
    fn split(&self, x: &Tensor, h: usize) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, h, self.head_dim))?.transpose(1, 2)?.contiguous()
    }

    /// (b, h, t, hd) -> (b, t, h·hd)
    fn merge(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, t, hd) = x.dims4()?;
        x.transpose(1, 2)?.reshape((b, t, h * hd))
    }

    /// Hugging Face's rotate_half on the first 2·half dims; with `sin` negated, its inverse (and
    /// its transpose, so the backward).
    fn rotate(&self, x: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let hd = self.head_dim;
        let half = self.cos.dim(1)?;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let c = &self.cos;
        let r1 = (x1.broadcast_mul(c)? - x2.broadcast_mul(sin)?)?;
        let r2 = (x2.broadcast_mul(c)? + x1.broadcast_mul(sin)?)?;
        if 2 * half == hd {
            Tensor::cat(&[r1, r2], D::Minus1)
        } else {
            Tensor::cat(&[r1, r2, x.narrow(D::Minus1, 2 * half, hd - 2 * half)?], D::Minus1)
        }
    }

    /// (b, kv, t, hd) -> (b, heads, t, hd): each key/value head serves heads/kv query heads.
    fn repeat(&self, x: &Tensor) -> Result<Tensor> {
        if self.kv_heads == self.heads {
            return Ok(x.clone());
        }
        let (b, kv, t, hd) = x.dims4()?;
        x.unsqueeze(2)?.broadcast_as((b, kv, self.heads / kv, t, hd))?.reshape((b, self.heads, t, hd))
    }

    /// The transpose of `repeat`: sums the gradients of the query heads that share a kv head.
    fn group_sum(&self, x: &Tensor) -> Result<Tensor> {
        if self.kv_heads == self.heads {
            return Ok(x.clone());
        }
        let (b, h, t, hd) = x.dims4()?;
        x.reshape((b, self.kv_heads, h / self.kv_heads, t, hd))?.sum(2)
    }

    /// Rotated q, rotated and repeated k, repeated v, and the probabilities.
    fn probs(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<[Tensor; 4]> {
        let q = self.rotate(&self.split(q, self.heads)?, &self.sin)?;
        let k = self.repeat(&self.rotate(&self.split(k, self.kv_heads)?, &self.sin)?)?;
        let v = self.repeat(&self.split(v, self.kv_heads)?)?;
        let p = (&q * self.scale)?.matmul(&k.t()?)?.apply_op1(CausalSoftmax)?;
        Ok([q, k, v, p])
    }
}

impl candle_core::CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = input(qs, ql, "attention")?;
        let k = input(ks, kl, "attention")?;
        let v = input(vs, vl, "attention")?;
        let [_, _, v, p] = self.probs(&q, &k, &v)?;
        output(&self.merge(&p.matmul(&v)?)?)
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _res: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [q, k, v, p] = self.probs(&q.detach(), &k.detach(), &v.detach())?;
        let go = self.split(g, self.heads)?;
        let dv = p.t()?.matmul(&go)?;
        let dp = go.matmul(&v.t()?)?;
        let ds = causal_softmax_grad(&p, &dp)?;
        let dq = (ds.matmul(&k)? * self.scale)?;
        let dk = (ds.t()?.matmul(&q)? * self.scale)?;
        let back = self.sin.neg()?;
        let dq = self.merge(&self.rotate(&dq, &back)?)?;
        let dk = self.merge(&self.rotate(&self.group_sum(&dk)?, &back)?)?;
        let dv = self.merge(&self.group_sum(&dv)?)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::train::rng::Rng;
    use candle_core::Var;

    fn tensor(rng: &mut Rng, dims: (usize, usize)) -> Tensor {
        Tensor::from_vec(rng.normals(dims.0 * dims.1, 1.0), dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn dropout_drops_p_of_the_values_the_same_way_each_time() {
        let x = Tensor::ones((300, 1001), candle_core::DType::F32, &Device::Cpu).unwrap();
        let d = Dropout { p: 0.1, seed: 42 };
        let a: Vec<f32> = d.apply(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.1).abs() < 0.003, "dropped {dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(d.apply(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), a);
        let other: Vec<f32> = Dropout { p: 0.1, seed: 43 }.apply(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_ne!(other, a);
    }

    /// The adapter's gradients (x, A and B, with dropout on) equal finite differences: the loss
    /// Σ r·y is linear in each of them, so a central difference is exact up to rounding. Every
    /// entry is checked, so the dropped inputs (whose gradient is zero) are among them.
    #[test]
    fn lora_matmul_gradients_match_finite_differences() {
        let mut rng = Rng::new(5);
        let (rows, inp, out, r) = (9, 70, 40, 3);
        let w = BaseWeight::Dense(tensor(&mut rng, (out, inp)));
        let op = || LoraMatmul { w: w.clone(), bias: None, scale: 1.5, dropout: Some(Dropout { p: 0.2, seed: 7 }) };
        let vars = [Var::from_tensor(&tensor(&mut rng, (rows, inp))).unwrap(), Var::from_tensor(&tensor(&mut rng, (r, inp))).unwrap(), Var::from_tensor(&tensor(&mut rng, (out, r))).unwrap()];
        let weights = tensor(&mut rng, (rows, out));
        let loss = |v: &[Var; 3]| v[0].as_tensor().apply_op3(v[1].as_tensor(), v[2].as_tensor(), op()).unwrap().mul(&weights).unwrap().sum_all().unwrap();
        let grads = loss(&vars).backward().unwrap();
        for (k, var) in vars.iter().enumerate() {
            let g: Vec<f32> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let orig: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..orig.len() {
                let at = |delta: f32| {
                    let mut v = orig.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                    loss(&vars).to_scalar::<f32>().unwrap()
                };
                let fd = (at(0.5) - at(-0.5)) / 1.0;
                var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
                assert!((fd - g[i]).abs() < 2e-3 * (1.0 + g[i].abs()), "input {k}[{i}]: backward {} vs {fd}", g[i]);
            }
        }
    }
}
