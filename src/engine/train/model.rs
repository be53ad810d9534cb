//! A trainable decoder for the three families lathe fine-tunes (Llama, Phi, Qwen2), written with
//! differentiable candle ops only (candle-transformers' models are inference-only: their fused
//! softmax / rope / norm kernels have no backward). Logits come back for every position.
//!
//! Every projection is a [`Linear`]: a frozen [`BaseWeight`] (dense today; a quantized store for
//! QLoRA replaces only that enum), an optional bias and an optional LoRA adapter. In full
//! fine-tuning the base weights themselves are the trainable variables.

use std::collections::BTreeMap;

use candle_core::{DType, Device, IndexOp, Tensor, Var, D};

use super::config::{Family, ModelConfig};
use super::rng::Rng;

pub type Result<T> = candle_core::Result<T>;

/// Which parameters train.
#[derive(Debug, Clone, PartialEq)]
pub enum Trainable {
    /// Every weight (embeddings, norms, projections, head).
    Full,
    Lora(LoraSpec),
    /// Nothing (evaluation, generation).
    None,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names as PEFT spells them: q_proj, k_proj, v_proj, o_proj (dense on Phi),
    /// gate_proj, up_proj, down_proj (fc1, fc2 on Phi).
    pub targets: Vec<String>,
}

impl LoraSpec {
    pub fn default_targets(family: Family) -> Vec<String> {
        let names: &[&str] = match family {
            Family::Phi => &["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
            _ => &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// The frozen storage of a projection's weight, (out, in). QLoRA adds a quantized variant whose
/// forward dequantizes; nothing else in the model changes.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    Dense(Tensor),
}

impl BaseWeight {
    fn forward(&self, x2: &Tensor) -> Result<Tensor> {
        match self {
            // A trainable weight (full fine-tuning) goes through candle's matmul, whose backward
            // gives both gradients.
            BaseWeight::Dense(w) if w.is_variable() || !x2.track_op() => x2.matmul(&w.t()?),
            // A frozen one through `FrozenMatmul`: candle's matmul backward would also compute
            // the weight's gradient (as much work as the forward, and an out x in tensor per
            // layer held until backward ends) only to throw it away.
            BaseWeight::Dense(w) => x2.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() }),
        }
    }
    pub fn dense(&self) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => Ok(w.clone()),
        }
    }
}

/// y = x·Wᵀ with W constant: the backward returns only dL/dx = g·W.
struct FrozenMatmul {
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &candle_core::CpuStorage, layout: &candle_core::Layout) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("frozen-matmul needs a contiguous input".into()))?;
        let x = storage.as_slice::<f32>()?[start..end].to_vec();
        let x = Tensor::from_vec(x, layout.shape(), &Device::Cpu)?;
        let y = x.matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        let data = y.flatten_all()?.to_vec1::<f32>()?;
        Ok((candle_core::CpuStorage::F32(data), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// Causal softmax over the last dimension of attention scores (b, h, t, t): row i keeps columns
/// 0..=i. One pass forward, keeping only its output; the backward is y·(g − Σ g·y). Composing it
/// from candle ops (mask add, max, sub, exp, sum, div) would keep five score-sized tensors per
/// layer alive until the backward ends.
struct CausalSoftmax;

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
        let s = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad.broadcast_sub(&s)?)?))
    }
}

/// RMSNorm, y = x / sqrt(mean(x²) + eps) · w, in one pass per row. Its backward recomputes the
/// row scale, so the graph keeps only the output (composed from candle ops it kept three
/// hidden-wide tensors per norm).
struct RmsNormOp {
    eps: f64,
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
struct SwiGlu;

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

#[derive(Debug, Clone)]
pub struct Lora {
    /// (r, in)
    pub a: Tensor,
    /// (out, r)
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub base: BaseWeight,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

/// Per-forward settings: training mode turns dropout on, with masks drawn from `rng`.
pub struct Ctx {
    pub train: bool,
    pub rng: Rng,
}

impl Ctx {
    pub fn eval() -> Ctx {
        Ctx { train: false, rng: Rng::new(0) }
    }
}

impl Linear {
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let last = *dims.last().unwrap();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, last))?;
        let mut y = self.base.forward(&x2)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let xin = if ctx.train && l.dropout > 0.0 { dropout(&x2, l.dropout, &mut ctx.rng)? } else { x2.clone() };
            let d = xin.matmul(&l.a.t()?)?.matmul(&l.b.t()?)?;
            y = (y + (d * l.scale)?)?;
        }
        let out = y.dim(1)?;
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.push(out);
        y.reshape(shape)
    }

    /// W + scale·B·A: the weight with the adapter folded in.
    pub fn merged(&self) -> Result<Tensor> {
        let w = self.base.dense()?;
        match &self.lora {
            Some(l) => w + (l.b.matmul(&l.a)? * l.scale)?,
            None => Ok(w),
        }
    }
}

fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let n = x.elem_count();
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..n).map(|_| if rng.uniform() < p { 0.0 } else { keep as f32 }).collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    x * mask
}

#[derive(Debug, Clone)]
pub enum Norm {
    Rms { w: Tensor, eps: f64 },
    Layer { w: Tensor, b: Tensor, eps: f64 },
}

impl Norm {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Rms { w, eps } => x.contiguous()?.apply_op2(&w.contiguous()?, RmsNormOp { eps: *eps }),
            Norm::Layer { w, b, eps } => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                let y = xc.broadcast_div(&(var + *eps)?.sqrt()?)?;
                y.broadcast_mul(w)?.broadcast_add(b)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Act {
    Silu,
    GeluTanh,
    GeluErf,
    Relu,
}

impl Act {
    fn parse(s: &str) -> std::result::Result<Act, String> {
        Ok(match s {
            "silu" | "swish" => Act::Silu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "gelu" => Act::GeluErf,
            "relu" => Act::Relu,
            other => return Err(format!("activation {other:?} is not supported (silu, gelu, gelu_new, relu are)")),
        })
    }
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Act::Silu => x.silu(),
            Act::GeluTanh => x.gelu(),
            Act::GeluErf => x.gelu_erf(),
            Act::Relu => x.relu(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Mlp {
    Gated { gate: Linear, up: Linear, down: Linear },
    Plain { fc1: Linear, fc2: Linear },
}

#[derive(Debug, Clone)]
pub struct Block {
    pub input_norm: Norm,
    /// Llama / Qwen2 normalise again before the MLP; Phi runs attention and MLP in parallel on
    /// the same normalised input.
    pub post_norm: Option<Norm>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub mlp: Mlp,
}

/// Rotary tables for positions 0..t: (t, rot/2) each.
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub cfg: ModelConfig,
    pub embed: Tensor,
    pub blocks: Vec<Block>,
    pub final_norm: Norm,
    /// None when the head is tied to the embeddings.
    pub lm_head: Option<Linear>,
    act: Act,
    inv_freq: Vec<f32>,
    pub device: Device,
    /// Trainable variables by their save name (HF name for full training, PEFT name for LoRA).
    pub trainable: Vec<(String, Var)>,
}

/// Reads one tensor from a source, making it a variable when it trains.
type Take<'a> = dyn FnMut(&mut dyn WeightSource, &str, &[usize], &mut Vec<(String, Var)>) -> std::result::Result<Tensor, String> + 'a;

/// Where weights come from: a checkpoint on disk, or a fresh random init.
pub trait WeightSource {
    /// The tensor `name` as f32, checked against `shape`.
    fn get(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, String>;
    fn has(&self, name: &str) -> bool;
}

/// Random init in the style of transformers' `_init_weights`: normal(0, std) for matrices and
/// embeddings, ones for norm weights, zeros for biases.
pub struct RandomInit {
    pub rng: Rng,
    pub std: f64,
    pub device: Device,
}

impl WeightSource for RandomInit {
    fn get(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, String> {
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm") || name.ends_with("layernorm.weight");
        let v = if name.ends_with(".bias") {
            vec![0f32; n]
        } else if is_norm && shape.len() == 1 {
            vec![1f32; n]
        } else {
            self.rng.normals(n, self.std)
        };
        Tensor::from_vec(v, shape, &self.device).map_err(|e| e.to_string())
    }
    fn has(&self, _name: &str) -> bool {
        true
    }
}

fn act_of(cfg: &ModelConfig) -> std::result::Result<Act, String> {
    Act::parse(&cfg.hidden_act)
}

/// Inverse frequencies of the rotary embedding, with the config's rope scaling applied.
pub fn inv_freq(cfg: &ModelConfig) -> std::result::Result<Vec<f32>, String> {
    let rot = cfg.rotary_dim();
    let mut f: Vec<f64> = (0..rot / 2).map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / rot as f64)).collect();
    if let Some(s) = &cfg.rope_scaling {
        match s.kind.as_str() {
            "default" => {}
            "linear" => f.iter_mut().for_each(|x| *x /= s.factor),
            // Dynamic NTK changes nothing up to max_position_embeddings, which training stays within.
            "dynamic" => {}
            "llama3" => {
                let get = |k: &str, d: f64| s.extra.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
                let low = get("low_freq_factor", 1.0);
                let high = get("high_freq_factor", 4.0);
                let old = get("original_max_position_embeddings", 8192.0);
                let low_wl = old / low;
                let high_wl = old / high;
                for x in f.iter_mut() {
                    let wl = 2.0 * std::f64::consts::PI / *x;
                    if wl < high_wl {
                    } else if wl > low_wl {
                        *x /= s.factor;
                    } else {
                        let smooth = (old / wl - low) / (high - low);
                        *x = (1.0 - smooth) * *x / s.factor + smooth * *x;
                    }
                }
            }
            other => return Err(format!("rope scaling {other:?} is not supported yet (linear, dynamic and llama3 are)")),
        }
    }
    Ok(f.into_iter().map(|x| x as f32).collect())
}

struct Names {
    embed: &'static str,
    final_norm: &'static str,
    o: &'static str,
}

fn names(family: Family) -> Names {
    match family {
        Family::Phi => Names { embed: "model.embed_tokens.weight", final_norm: "model.final_layernorm", o: "dense" },
        _ => Names { embed: "model.embed_tokens.weight", final_norm: "model.norm", o: "o_proj" },
    }
}

impl Model {
    /// Builds the model from `src`. `trainable` decides which tensors become variables; LoRA
    /// adapters are initialised from `rng` (A: Kaiming-uniform like PEFT, B: zero).
    pub fn build(
        cfg: &ModelConfig,
        src: &mut dyn WeightSource,
        trainable: &Trainable,
        rng: &mut Rng,
        device: &Device,
    ) -> std::result::Result<Model, String> {
        let act = act_of(cfg)?;
        let inv = inv_freq(cfg)?;
        let h = cfg.hidden_size;
        let hd = cfg.head_dim;
        let full = matches!(trainable, Trainable::Full);
        let mut vars: Vec<(String, Var)> = Vec::new();
        let mut take = |src: &mut dyn WeightSource, name: &str, shape: &[usize], vars: &mut Vec<(String, Var)>| -> std::result::Result<Tensor, String> {
            let t = src.get(name, shape)?;
            if full {
                let v = Var::from_tensor(&t).map_err(|e| e.to_string())?;
                let t = v.as_tensor().clone();
                vars.push((name.to_string(), v));
                Ok(t)
            } else {
                Ok(t)
            }
        };
        let n = names(cfg.family);
        let embed = take(src, n.embed, &[cfg.vocab_size, h], &mut vars)?;
        let norm = |src: &mut dyn WeightSource, prefix: &str, vars: &mut Vec<(String, Var)>, take: &mut Take| -> std::result::Result<Norm, String> {
            let w = take(src, &format!("{prefix}.weight"), &[h], vars)?;
            Ok(match cfg.family {
                Family::Phi => Norm::Layer { w, b: take(src, &format!("{prefix}.bias"), &[h], vars)?, eps: cfg.norm_eps },
                _ => Norm::Rms { w, eps: cfg.norm_eps },
            })
        };
        let mut linear = |src: &mut dyn WeightSource,
                          path: &str,
                          module: &str,
                          out: usize,
                          inp: usize,
                          bias: bool,
                          vars: &mut Vec<(String, Var)>,
                          take: &mut Take|
         -> std::result::Result<Linear, String> {
            let w = take(src, &format!("{path}.weight"), &[out, inp], vars)?;
            let b = if bias { Some(take(src, &format!("{path}.bias"), &[out], vars)?) } else { None };
            let lora = match trainable {
                Trainable::Lora(spec) if spec.targets.iter().any(|t| t == module) => {
                    let bound = 1.0 / (inp as f64).sqrt();
                    let a = Tensor::from_vec(rng.uniforms(spec.r * inp, -bound, bound), (spec.r, inp), device).map_err(|e| e.to_string())?;
                    let bz = Tensor::zeros((out, spec.r), DType::F32, device).map_err(|e| e.to_string())?;
                    let av = Var::from_tensor(&a).map_err(|e| e.to_string())?;
                    let bv = Var::from_tensor(&bz).map_err(|e| e.to_string())?;
                    let l = Lora { a: av.as_tensor().clone(), b: bv.as_tensor().clone(), scale: spec.scale(), dropout: spec.dropout };
                    vars.push((format!("base_model.model.{path}.lora_A.weight"), av));
                    vars.push((format!("base_model.model.{path}.lora_B.weight"), bv));
                    Some(l)
                }
                _ => None,
            };
            Ok(Linear { base: BaseWeight::Dense(w), bias: b, lora })
        };
        let phi = cfg.family == Family::Phi;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let input_norm = norm(src, &format!("{p}.input_layernorm"), &mut vars, &mut take)?;
            let post_norm = if phi { None } else { Some(norm(src, &format!("{p}.post_attention_layernorm"), &mut vars, &mut take)?) };
            let a = format!("{p}.self_attn");
            let qb = cfg.qkv_bias || phi;
            let q = linear(src, &format!("{a}.q_proj"), "q_proj", cfg.num_heads * hd, h, qb, &mut vars, &mut take)?;
            let k = linear(src, &format!("{a}.k_proj"), "k_proj", cfg.num_kv_heads * hd, h, qb, &mut vars, &mut take)?;
            let v = linear(src, &format!("{a}.v_proj"), "v_proj", cfg.num_kv_heads * hd, h, qb, &mut vars, &mut take)?;
            let o = linear(src, &format!("{a}.{}", n.o), n.o, h, cfg.num_heads * hd, phi, &mut vars, &mut take)?;
            let m = format!("{p}.mlp");
            let mlp = if phi {
                Mlp::Plain {
                    fc1: linear(src, &format!("{m}.fc1"), "fc1", cfg.intermediate_size, h, true, &mut vars, &mut take)?,
                    fc2: linear(src, &format!("{m}.fc2"), "fc2", h, cfg.intermediate_size, true, &mut vars, &mut take)?,
                }
            } else {
                Mlp::Gated {
                    gate: linear(src, &format!("{m}.gate_proj"), "gate_proj", cfg.intermediate_size, h, false, &mut vars, &mut take)?,
                    up: linear(src, &format!("{m}.up_proj"), "up_proj", cfg.intermediate_size, h, false, &mut vars, &mut take)?,
                    down: linear(src, &format!("{m}.down_proj"), "down_proj", h, cfg.intermediate_size, false, &mut vars, &mut take)?,
                }
            };
            blocks.push(Block { input_norm, post_norm, q, k, v, o, mlp });
        }
        let final_norm = norm(src, n.final_norm, &mut vars, &mut take)?;
        let lm_head = if cfg.tie_word_embeddings && !src.has("lm_head.weight") {
            None
        } else {
            Some(linear(src, "lm_head", "lm_head", cfg.vocab_size, h, phi, &mut vars, &mut take)?)
        };
        Ok(Model { cfg: cfg.clone(), embed, blocks, final_norm, lm_head, act, inv_freq: inv, device: device.clone(), trainable: vars })
    }

    pub fn rope_tables(&self, t: usize) -> Result<RopeTables> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(RopeTables { cos: Tensor::from_vec(cos, (t, half), &self.device)?, sin: Tensor::from_vec(sin, (t, half), &self.device)? })
    }

    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))
    }

    fn rope(&self, x: &Tensor, tabs: &RopeTables) -> Result<Tensor> {
        // x: (b, heads, t, hd). HF rotate_half on the first `rot` dims.
        let hd = x.dim(D::Minus1)?;
        let half = self.inv_freq.len();
        let rot = half * 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let c = &tabs.cos;
        let s = &tabs.sin;
        let r1 = (x1.broadcast_mul(c)? - x2.broadcast_mul(s)?)?;
        let r2 = (x2.broadcast_mul(c)? + x1.broadcast_mul(s)?)?;
        if rot == hd {
            Tensor::cat(&[r1, r2], D::Minus1)
        } else {
            let pass = x.narrow(D::Minus1, rot, hd - rot)?;
            Tensor::cat(&[r1, r2, pass], D::Minus1)
        }
    }

    /// One decoder block, (b, t, h) -> (b, t, h).
    pub fn block(&self, i: usize, x: &Tensor, tabs: &RopeTables, ctx: &mut Ctx) -> Result<Tensor> {
        let bl = &self.blocks[i];
        let (b, t, _) = x.dims3()?;
        let nh = self.cfg.num_heads;
        let nkv = self.cfg.num_kv_heads;
        let hd = self.cfg.head_dim;
        let hx = bl.input_norm.forward(x)?;
        let q = bl.q.forward(&hx, ctx)?.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = bl.k.forward(&hx, ctx)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = bl.v.forward(&hx, ctx)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = self.rope(&q, tabs)?;
        let k = self.rope(&k, tabs)?;
        let (k, v) = if nkv != nh {
            let rep = nh / nkv;
            let k = k.unsqueeze(2)?.broadcast_as((b, nkv, rep, t, hd))?.reshape((b, nh, t, hd))?;
            let v = v.unsqueeze(2)?.broadcast_as((b, nkv, rep, t, hd))?.reshape((b, nh, t, hd))?;
            (k, v)
        } else {
            (k, v)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q * scale)?.matmul(&k.t()?.contiguous()?)?.contiguous()?.apply_op1(CausalSoftmax)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        let attn_out = bl.o.forward(&y, ctx)?;
        match (&bl.post_norm, &bl.mlp) {
            (None, mlp) => {
                // Phi: parallel attention and MLP on the same normalised input.
                let m = self.mlp(mlp, &hx, ctx)?;
                (x + attn_out)? + m
            }
            (Some(pn), mlp) => {
                let x = (x + attn_out)?;
                let m = self.mlp(mlp, &pn.forward(&x)?, ctx)?;
                x + m
            }
        }
    }

    fn mlp(&self, mlp: &Mlp, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match mlp {
            Mlp::Gated { gate, up, down } => {
                let (g, u) = (gate.forward(x, ctx)?, up.forward(x, ctx)?);
                let h = match self.act {
                    Act::Silu => g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)?,
                    act => (act.apply(&g)? * u)?,
                };
                down.forward(&h, ctx)
            }
            Mlp::Plain { fc1, fc2 } => fc2.forward(&self.act.apply(&fc1.forward(x, ctx)?)?, ctx),
        }
    }

    /// Final norm and head: (b, t, h) -> logits (b, t, vocab).
    pub fn head(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let x = self.final_norm.forward(x)?;
        match &self.lm_head {
            Some(l) => l.forward(&x, ctx),
            None => {
                let (b, t, h) = x.dims3()?;
                let tied = BaseWeight::Dense(self.embed.clone());
                tied.forward(&x.reshape((b * t, h))?)?.reshape((b, t, self.cfg.vocab_size))
            }
        }
    }

    /// Logits for every position of `ids` (b, t).
    pub fn forward(&self, ids: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        let tabs = self.rope_tables(t)?;
        let mut x = self.embed(ids)?;
        for i in 0..self.blocks.len() {
            x = self.block(i, &x, &tabs, ctx)?;
        }
        self.head(&x, ctx)
    }

    /// Every weight under its Hugging Face name, with LoRA folded in: what a merged model saves.
    pub fn merged_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        let n = names(self.cfg.family);
        out.insert(n.embed.to_string(), self.embed.clone());
        let norm = |out: &mut BTreeMap<String, Tensor>, prefix: &str, nm: &Norm| match nm {
            Norm::Rms { w, .. } => {
                out.insert(format!("{prefix}.weight"), w.clone());
            }
            Norm::Layer { w, b, .. } => {
                out.insert(format!("{prefix}.weight"), w.clone());
                out.insert(format!("{prefix}.bias"), b.clone());
            }
        };
        let lin = |out: &mut BTreeMap<String, Tensor>, path: &str, l: &Linear| -> Result<()> {
            out.insert(format!("{path}.weight"), l.merged()?);
            if let Some(b) = &l.bias {
                out.insert(format!("{path}.bias"), b.clone());
            }
            Ok(())
        };
        for (i, bl) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            norm(&mut out, &format!("{p}.input_layernorm"), &bl.input_norm);
            if let Some(pn) = &bl.post_norm {
                norm(&mut out, &format!("{p}.post_attention_layernorm"), pn);
            }
            lin(&mut out, &format!("{p}.self_attn.q_proj"), &bl.q)?;
            lin(&mut out, &format!("{p}.self_attn.k_proj"), &bl.k)?;
            lin(&mut out, &format!("{p}.self_attn.v_proj"), &bl.v)?;
            lin(&mut out, &format!("{p}.self_attn.{}", n.o), &bl.o)?;
            match &bl.mlp {
                Mlp::Gated { gate, up, down } => {
                    lin(&mut out, &format!("{p}.mlp.gate_proj"), gate)?;
                    lin(&mut out, &format!("{p}.mlp.up_proj"), up)?;
                    lin(&mut out, &format!("{p}.mlp.down_proj"), down)?;
                }
                Mlp::Plain { fc1, fc2 } => {
                    lin(&mut out, &format!("{p}.mlp.fc1"), fc1)?;
                    lin(&mut out, &format!("{p}.mlp.fc2"), fc2)?;
                }
            }
        }
        norm(&mut out, n.final_norm, &self.final_norm);
        if let Some(h) = &self.lm_head {
            lin(&mut out, "lm_head", h)?;
        }
        Ok(out)
    }

    /// Number of parameters (base) and of trainable ones.
    pub fn param_counts(&self) -> (usize, usize) {
        let base: usize = self.merged_tensors().map(|m| m.values().map(|t| t.elem_count()).sum()).unwrap_or(0);
        let tr: usize = self.trainable.iter().map(|(_, v)| v.elem_count()).sum();
        (base, tr)
    }

    /// Greedy continuation of `prompt`, stopping at any of `stop` or after `max_new` tokens.
    /// Recomputes the whole sequence each step (no KV cache): meant for short evaluation answers.
    pub fn greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
        let mut ids = prompt.to_vec();
        let mut out = Vec::new();
        let mut ctx = Ctx::eval();
        for _ in 0..max_new {
            let t = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
            let logits = self.forward(&t, &mut ctx)?;
            let last = logits.i((0, ids.len() - 1))?;
            let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            ids.push(next);
        }
        Ok(out)
    }
}
