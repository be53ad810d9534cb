//! A trainable decoder for the three families lathe fine-tunes (Llama, Phi, Qwen2), written with
//! differentiable candle ops only (candle-transformers' models are inference-only: their fused
//! softmax / rope / norm kernels have no backward). Logits come back for every position.
//!
//! Every projection is a [`Linear`]: a frozen [`BaseWeight`] (f32, or NF4 for QLoRA), an optional
//! bias and an optional LoRA adapter. In full fine-tuning the base weights themselves are the
//! trainable variables.

use std::collections::BTreeMap;

use candle_core::{DType, Device, IndexOp, Tensor, Var, D};

use super::config::{Family, ModelConfig};
use super::base::{BasePrecision, BaseWeight};
use super::ops::{Attention, Dropout, HeadLoss, LoraMatmul, RmsNormOp, SwiGlu};
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

/// Per-forward settings: training mode turns dropout on, with masks drawn from `rng`; with
/// `inputs`, every projection's input is summed into it (an importance matrix).
pub struct Ctx {
    pub train: bool,
    pub rng: Rng,
    pub inputs: Option<InputStats>,
}

impl Ctx {
    pub fn eval() -> Ctx {
        Ctx { train: false, rng: Rng::new(0), inputs: None }
    }
}

/// What llama.cpp's importance matrix holds, per projection under its GGUF name
/// (`blk.N.attn_q.weight`): the sum over every row (token) of each input channel's square, and
/// the rows counted. Projections that read the same input (q, k and v; gate and up) get the same
/// sums. Sums are kept in f64 across forward passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputStats {
    pub sums: BTreeMap<String, (Vec<f64>, u64)>,
}

impl InputStats {
    /// Adds the rows of `x` (…, in) to block `layer`'s projections named `roles` (attn_q, …).
    pub fn add(&mut self, layer: usize, roles: &[&str], x: &Tensor) -> Result<()> {
        let cols = x.dim(D::Minus1)?;
        let rows = x.elem_count() / cols.max(1);
        let sq = x.reshape((rows, cols))?.sqr()?.sum(0)?.to_vec1::<f32>()?;
        for role in roles {
            let (sum, n) = self.sums.entry(format!("blk.{layer}.{role}.weight")).or_insert_with(|| (vec![0.0; cols], 0));
            for (s, v) in sum.iter_mut().zip(&sq) {
                *s += *v as f64;
            }
            *n += rows as u64;
        }
        Ok(())
    }
}

impl Linear {
    pub fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let last = *dims.last().unwrap();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((rows, last))?;
        let y = match &self.lora {
            Some(l) if self.base.frozen() => {
                let dropout = (ctx.train && l.dropout > 0.0).then(|| Dropout { p: l.dropout, seed: ctx.rng.next_u64() });
                let op = LoraMatmul { w: self.base.clone(), bias: self.bias.clone(), scale: l.scale, dropout };
                x2.contiguous()?.apply_op3(&l.a, &l.b, op)?
            }
            Some(_) => return Err(candle_core::Error::Msg("a LoRA adapter needs a frozen base weight".into())),
            None => {
                let y = self.base.forward(&x2)?;
                match &self.bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
        };
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
    /// The tensor `name` in the float type it is stored in (bf16 and f16 stay so; others become
    /// f32): what a frozen embedding table or head is held as.
    fn get_stored(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, String> {
        self.get(name, shape)
    }
    /// How frozen projection weights are held: each is quantized as it is read, so the whole
    /// model never sits in f32.
    fn precision(&self) -> BasePrecision {
        BasePrecision::F32
    }
}

/// A source whose frozen projections are held at `precision`.
pub struct Held<'a> {
    pub src: &'a mut dyn WeightSource,
    pub precision: BasePrecision,
}

impl WeightSource for Held<'_> {
    fn get(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, String> {
        self.src.get(name, shape)
    }
    fn has(&self, name: &str) -> bool {
        self.src.has(name)
    }
    fn get_stored(&mut self, name: &str, shape: &[usize]) -> std::result::Result<Tensor, String> {
        self.src.get_stored(name, shape)
    }
    fn precision(&self) -> BasePrecision {
        self.precision
    }
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
        if full && src.precision() != BasePrecision::F32 {
            return Err(format!(
                "Full fine-tuning trains every weight, so it needs the base in f32, not {}; train a LoRA adapter on the {} base (QLoRA) instead.",
                src.precision().name(),
                src.precision().name()
            ));
        }
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
        // A frozen embedding table (and head, below) stays in its stored 16-bit float.
        let embed = if full { take(src, n.embed, &[cfg.vocab_size, h], &mut vars)? } else { src.get_stored(n.embed, &[cfg.vocab_size, h])? };
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
            let name = format!("{path}.weight");
            // The output head keeps its precision (see `BasePrecision`).
            let w = if full {
                BaseWeight::Dense(take(src, &name, &[out, inp], vars)?)
            } else if module == "lm_head" {
                BaseWeight::stored(src.get_stored(&name, &[out, inp])?)
            } else {
                BaseWeight::hold(take(src, &name, &[out, inp], vars)?, src.precision()).map_err(|e| e.to_string())?
            };
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
            Ok(Linear { base: w, bias: b, lora })
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
        self.embed.index_select(&ids.flatten_all()?, 0)?.to_dtype(DType::F32)?.reshape((b, t, self.cfg.hidden_size))
    }

    /// One decoder block, (b, t, h) -> (b, t, h).
    pub fn block(&self, i: usize, x: &Tensor, tabs: &RopeTables, ctx: &mut Ctx) -> Result<Tensor> {
        let bl = &self.blocks[i];
        let hx = bl.input_norm.forward(x)?;
        if let Some(s) = ctx.inputs.as_mut() {
            s.add(i, &["attn_q", "attn_k", "attn_v"], &hx)?;
        }
        let q = bl.q.forward(&hx, ctx)?.contiguous()?;
        let k = bl.k.forward(&hx, ctx)?.contiguous()?;
        let v = bl.v.forward(&hx, ctx)?.contiguous()?;
        let attention = Attention {
            cos: tabs.cos.clone(),
            sin: tabs.sin.clone(),
            heads: self.cfg.num_heads,
            kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
            scale: 1.0 / (self.cfg.head_dim as f64).sqrt(),
        };
        let y = q.apply_op3(&k, &v, attention)?;
        if let Some(s) = ctx.inputs.as_mut() {
            s.add(i, &["attn_output"], &y)?;
        }
        let attn_out = bl.o.forward(&y, ctx)?;
        match (&bl.post_norm, &bl.mlp) {
            (None, mlp) => {
                // Phi: parallel attention and MLP on the same normalised input.
                let m = self.mlp(i, mlp, &hx, ctx)?;
                (x + attn_out)? + m
            }
            (Some(pn), mlp) => {
                let x = (x + attn_out)?;
                let m = self.mlp(i, mlp, &pn.forward(&x)?, ctx)?;
                x + m
            }
        }
    }

    fn mlp(&self, layer: usize, mlp: &Mlp, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (first, second): (&[&str], &[&str]) = match mlp {
            Mlp::Gated { .. } => (&["ffn_gate", "ffn_up"], &["ffn_down"]),
            Mlp::Plain { .. } => (&["ffn_up"], &["ffn_down"]),
        };
        if let Some(s) = ctx.inputs.as_mut() {
            s.add(layer, first, x)?;
        }
        let h = match mlp {
            Mlp::Gated { gate, up, .. } => {
                let (g, u) = (gate.forward(x, ctx)?, up.forward(x, ctx)?);
                match self.act {
                    Act::Silu => g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)?,
                    act => (act.apply(&g)? * u)?,
                }
            }
            Mlp::Plain { fc1, .. } => self.act.apply(&fc1.forward(x, ctx)?)?,
        };
        if let Some(s) = ctx.inputs.as_mut() {
            s.add(layer, second, &h)?;
        }
        match mlp {
            Mlp::Gated { down, .. } => down.forward(&h, ctx),
            Mlp::Plain { fc2, .. } => fc2.forward(&h, ctx),
        }
    }

    /// Final norm and head: (b, t, h) -> logits (b, t, vocab).
    pub fn head(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let x = self.final_norm.forward(x)?;
        match &self.lm_head {
            Some(l) => l.forward(&x, ctx),
            None => {
                let (b, t, h) = x.dims3()?;
                let tied = BaseWeight::stored(self.embed.clone());
                tied.forward(&x.reshape((b * t, h))?)?.reshape((b, t, self.cfg.vocab_size))
            }
        }
    }

    /// The masked loss sum over (b, t, h) hidden states through the final norm and a frozen head,
    /// without the (b·t, vocab) logits (`HeadLoss`); None when the head trains (full fine-tuning,
    /// or an adapter on it), which goes through `head` and the logits.
    pub fn head_loss(&self, x: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Option<Tensor>> {
        let (w, bias) = match &self.lm_head {
            Some(l) if l.lora.is_none() && l.base.frozen() => (l.base.clone(), l.bias.clone()),
            None if !self.embed.is_variable() => (BaseWeight::stored(self.embed.clone()), None),
            _ => return Ok(None),
        };
        let x = self.final_norm.forward(x)?;
        let (b, t, h) = x.dims3()?;
        let op = HeadLoss::new(w, bias, targets.flatten_all()?.to_vec1()?, weights.flatten_all()?.to_vec1()?)?;
        Ok(Some(x.reshape((b * t, h))?.contiguous()?.apply_op1(op)?))
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
        out.insert(n.embed.to_string(), self.embed.to_dtype(DType::F32)?);
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
    /// Counted from the shapes: nothing is dequantized or converted.
    pub fn param_counts(&self) -> (usize, usize) {
        let norm = |n: &Norm| match n {
            Norm::Rms { w, .. } => w.elem_count(),
            Norm::Layer { w, b, .. } => w.elem_count() + b.elem_count(),
        };
        let lin = |l: &Linear| l.base.dims().map(|(o, i)| o * i).unwrap_or(0) + l.bias.as_ref().map_or(0, |b| b.elem_count());
        let mut base = self.embed.elem_count() + norm(&self.final_norm) + self.lm_head.as_ref().map_or(0, lin);
        for bl in &self.blocks {
            base += norm(&bl.input_norm) + bl.post_norm.as_ref().map_or(0, norm);
            base += [&bl.q, &bl.k, &bl.v, &bl.o].into_iter().map(lin).sum::<usize>();
            base += match &bl.mlp {
                Mlp::Gated { gate, up, down } => lin(gate) + lin(up) + lin(down),
                Mlp::Plain { fc1, fc2 } => lin(fc1) + lin(fc2),
            };
        }
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
