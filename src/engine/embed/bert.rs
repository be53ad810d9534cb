//! lathe's own forward pass for BERT-family encoders (BERT, MiniLM, bge, e5, gte: absolute
//! positions, post-norm layers), inference only, on the CPU. The texts of a batch are packed
//! end to end, not padded: the linear layers run over real tokens only and each text attends
//! within itself, so no attention mask exists. Query, key and value are one matrix product; each
//! bias is the product's starting value; residual and LayerNorm are one pass (kernels.rs).
//! Weights are read in Hugging Face's names (with or without the `bert.` prefix).

use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde_json::Value;

use super::kernels::{self, Act};

/// The hyper-parameters read from config.json.
#[derive(Debug, Clone)]
pub struct Shape {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub positions: usize,
    pub types: usize,
    pub eps: f32,
    pub act: Act,
    pub pad: u32,
}

impl Shape {
    /// The shape, or a sentence saying what config.json lacks or what lathe cannot run.
    pub fn read(cfg: &Value) -> std::result::Result<Shape, String> {
        let num = |key: &str| cfg[key].as_u64().map(|v| v as usize).ok_or_else(|| format!("config.json has no {key}"));
        let act_name = cfg["hidden_act"].as_str().unwrap_or("gelu");
        let act = Act::parse(act_name).ok_or_else(|| format!("its activation {act_name:?} is not one lathe runs (gelu, gelu_new, relu)"))?;
        let position = cfg["position_embedding_type"].as_str().unwrap_or("absolute");
        if position != "absolute" {
            return Err(format!("its position embeddings are {position:?}; lathe runs absolute ones"));
        }
        let shape = Shape {
            vocab: num("vocab_size")?,
            hidden: num("hidden_size")?,
            heads: num("num_attention_heads")?,
            layers: num("num_hidden_layers")?,
            intermediate: num("intermediate_size")?,
            positions: num("max_position_embeddings")?,
            types: num("type_vocab_size").unwrap_or(2).max(1),
            eps: cfg["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            act,
            pad: cfg["pad_token_id"].as_u64().unwrap_or(0) as u32,
        };
        if shape.heads == 0 || !shape.hidden.is_multiple_of(shape.heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", shape.hidden, shape.heads));
        }
        Ok(shape)
    }
}

/// A linear layer: W (out, in) row-major and its bias.
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: (3·hidden, hidden).
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

pub struct Bert {
    pub shape: Shape,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's embedding: lathe embeds single texts.
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

type Result<T> = candle_core::Result<T>;

fn values(vb: &VarBuilder, dims: &[usize], name: &str) -> Result<Vec<f32>> {
    vb.get(dims, name)?.flatten_all()?.to_vec1::<f32>()
}

fn linear(vb: &VarBuilder, out: usize, inp: usize) -> Result<Linear> {
    Ok(Linear { w: values(vb, &[out, inp], "weight")?, b: values(vb, &[out], "bias")?, out, inp })
}

fn norm(vb: &VarBuilder, n: usize) -> Result<Norm> {
    Ok(Norm { w: values(vb, &[n], "weight")?, b: values(vb, &[n], "bias")? })
}

impl Bert {
    pub fn load(vb: VarBuilder, shape: Shape, model_type: Option<&str>) -> Result<Bert> {
        let vb = match model_type {
            _ if vb.contains_tensor("embeddings.word_embeddings.weight") => vb,
            _ if vb.contains_tensor("bert.embeddings.word_embeddings.weight") => vb.pp("bert"),
            Some(t) if vb.contains_tensor(&format!("{t}.embeddings.word_embeddings.weight")) => vb.pp(t),
            _ => vb,
        };
        let h = shape.hidden;
        let e = vb.pp("embeddings");
        let token_types = values(&e, &[shape.types, h], "token_type_embeddings.weight")?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let parts = ["query", "key", "value"].map(|p| linear(&l.pp("attention.self").pp(p), h, h));
            let [q, k, v] = parts;
            let (q, k, v) = (q?, k?, v?);
            let qkv = Linear { w: [q.w, k.w, v.w].concat(), b: [q.b, k.b, v.b].concat(), out: 3 * h, inp: h };
            layers.push(Layer {
                qkv,
                attn_out: linear(&l.pp("attention.output.dense"), h, h)?,
                attn_norm: norm(&l.pp("attention.output.LayerNorm"), h)?,
                up: linear(&l.pp("intermediate.dense"), shape.intermediate, h)?,
                down: linear(&l.pp("output.dense"), h, shape.intermediate)?,
                out_norm: norm(&l.pp("output.LayerNorm"), h)?,
            });
        }
        Ok(Bert {
            word: values(&e, &[shape.vocab, h], "word_embeddings.weight")?,
            position: values(&e, &[shape.positions, h], "position_embeddings.weight")?,
            token_type: token_types[..h].to_vec(),
            embed_norm: norm(&e.pp("LayerNorm"), h)?,
            layers,
            shape,
        })
    }

    /// The last hidden states of the texts, packed: row r of the result (hidden wide) is token r
    /// of the texts laid end to end. Each text must fit the position table (the tokenizer
    /// truncates to it).
    pub fn forward(&self, texts: &[&[u32]]) -> Result<Vec<f32>> {
        let h = self.shape.hidden;
        let rows: usize = texts.iter().map(|t| t.len()).sum();
        let mut x = vec![0f32; rows * h];
        let mut starts = Vec::with_capacity(texts.len());
        let mut at = 0;
        for ids in texts {
            if ids.len() > self.shape.positions {
                candle_core::bail!("a text of {} tokens is longer than the model's {} positions", ids.len(), self.shape.positions);
            }
            starts.push(at);
            for (i, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= self.shape.vocab {
                    candle_core::bail!("token id {id} is outside the model's vocabulary of {}", self.shape.vocab);
                }
                let row = &mut x[(at + i) * h..(at + i + 1) * h];
                let (w, p) = (&self.word[id * h..(id + 1) * h], &self.position[i * h..(i + 1) * h]);
                for (((r, w), p), t) in row.iter_mut().zip(w).zip(p).zip(&self.token_type) {
                    *r = w + p + t;
                }
            }
            at += ids.len();
        }
        let n = &self.embed_norm;
        x.par_chunks_mut(h).for_each(|row| kernels::norm(row, &n.w, &n.b, self.shape.eps));
        let spans: Vec<(usize, usize)> = starts.iter().zip(texts).map(|(&s, t)| (s, t.len())).collect();
        let (mut qkv, mut ctx, mut y, mut up) = (Vec::new(), vec![0f32; rows * h], Vec::new(), Vec::new());
        for layer in &self.layers {
            matmul(&x, rows, &layer.qkv, &mut qkv);
            self.attend(&qkv, &spans, &mut ctx);
            matmul(&ctx, rows, &layer.attn_out, &mut y);
            let nm = &layer.attn_norm;
            x.par_chunks_mut(h).zip(y.par_chunks(h)).for_each(|(x, y)| kernels::add_norm(x, y, &nm.w, &nm.b, self.shape.eps));
            matmul(&x, rows, &layer.up, &mut up);
            up.par_chunks_mut(4096).for_each(|c| self.shape.act.apply(c));
            matmul(&up, rows, &layer.down, &mut y);
            let nm = &layer.out_norm;
            x.par_chunks_mut(h).zip(y.par_chunks(h)).for_each(|(x, y)| kernels::add_norm(x, y, &nm.w, &nm.b, self.shape.eps));
        }
        Ok(x)
    }

    /// Scaled dot-product attention of each text within itself, every head at once in
    /// parallel: ctx (rows, hidden) from qkv (rows, 3·hidden).
    fn attend(&self, qkv: &[f32], spans: &[(usize, usize)], ctx: &mut [f32]) {
        let (h, heads) = (self.shape.hidden, self.shape.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let out = Shared(ctx.as_mut_ptr());
        let tasks: Vec<(usize, usize, usize)> = spans.iter().flat_map(|&(s, len)| (0..heads).map(move |hd| (s, len, hd))).collect();
        tasks.par_iter().for_each(|&(start, len, head)| {
            let mut scores = vec![0f32; len * len];
            let q = qkv[start * 3 * h + head * d..].as_ptr();
            let k = qkv[start * 3 * h + h + head * d..].as_ptr();
            let v = qkv[start * 3 * h + 2 * h + head * d..].as_ptr();
            let stride = 3 * h as isize;
            // SAFETY: every pointer stays inside qkv's rows start..start+len (the strides step
            // one row of 3·hidden, the columns one head's d), scores is len×len, and each task
            // writes only its own text's rows and its own head's columns of ctx.
            unsafe {
                // scores (len, len) = scale · Q Kᵀ
                gemm::gemm(len, len, d, scores.as_mut_ptr(), 1, len as isize, false, q, 1, stride, k, stride, 1, 0.0, scale, false, false, false, gemm::Parallelism::None);
            }
            scores.chunks_mut(len).for_each(kernels::softmax);
            unsafe {
                // ctx (len, d) = P V
                let dst = out.at(start * h + head * d);
                gemm::gemm(len, d, len, dst, 1, h as isize, false, scores.as_ptr(), 1, len as isize, v, 1, stride, 0.0, 1.0, false, false, false, gemm::Parallelism::None);
            }
        });
    }
}

/// A pointer to ctx that the attention tasks share; each writes a disjoint block.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint elements (see `Bert::attend`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the buffer this points into.
        unsafe { self.0.add(offset) }
    }
}

/// out (rows, l.out) = bias + x (rows, l.in) · Wᵀ, across rayon's threads.
fn matmul(x: &[f32], rows: usize, l: &Linear, out: &mut Vec<f32>) {
    debug_assert_eq!(x.len(), rows * l.inp);
    out.clear();
    out.reserve(rows * l.out);
    for _ in 0..rows {
        out.extend_from_slice(&l.b);
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: out is rows×out, x rows×in, W out×in, each addressed within its length: dst and
    // lhs row-major; rhs (in, out) is Wᵀ, element (i, j) at W[j·in + i].
    unsafe {
        gemm::gemm(rows, l.out, l.inp, out.as_mut_ptr(), 1, l.out as isize, true, x.as_ptr(), 1, l.inp as isize, l.w.as_ptr(), l.inp as isize, 1, 1.0, 1.0, false, false, false, par);
    }
}
