//! The frozen base weight of a projection and the product through it: dense f32, 16-bit, or NF4
//! (QLoRA's 4-bit store), converted or dequantized for one product at a time. Its backward passes the gradient to the
//! input only (the weight learns nothing), so adapters below a frozen layer still learn.

use std::sync::Arc;

use candle_core::{CpuStorage, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::nf4::Nf4;

type Result<T> = candle_core::Result<T>;

/// How a model's projection weights are held while it trains or evaluates. Embeddings, norms,
/// biases and the output head keep their precision whatever this says (as peft and bitsandbytes
/// keep them): they are a small share of the weights, and the head's rounding would show in every
/// logit. A frozen embedding table and head stay in the 16-bit float the checkpoint stores
/// (`BaseWeight::Half`), which loses nothing: every 16-bit value is exact in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BasePrecision {
    #[default]
    F32,
    /// bfloat16: half of f32's memory, exact for a checkpoint stored in bf16 (most are), rounded
    /// for one stored in f32 or f16; converted to f32 for each product.
    Bf16,
    /// 4-bit NormalFloat in blocks of 64 (QLoRA).
    Nf4,
    /// NF4 with its absmax scales quantized again to 8 bits in blocks of 256 (bitsandbytes'
    /// `bnb_4bit_use_double_quant`): about 0.37 bits less per weight.
    #[serde(rename = "nf4-dq")]
    Nf4Dq,
}

impl BasePrecision {
    pub const ALL: [BasePrecision; 4] = [BasePrecision::F32, BasePrecision::Bf16, BasePrecision::Nf4, BasePrecision::Nf4Dq];

    pub fn name(self) -> &'static str {
        match self {
            BasePrecision::F32 => "f32",
            BasePrecision::Bf16 => "bf16",
            BasePrecision::Nf4 => "nf4",
            BasePrecision::Nf4Dq => "nf4-dq",
        }
    }

    pub fn parse(name: &str) -> std::result::Result<BasePrecision, String> {
        BasePrecision::ALL
            .into_iter()
            .find(|p| p.name() == name.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("{name:?} is not a base precision; use f32, bf16, nf4 or nf4-dq."))
    }

    /// 4 bits per weight (QLoRA).
    pub fn is_4bit(self) -> bool {
        matches!(self, BasePrecision::Nf4 | BasePrecision::Nf4Dq)
    }

    /// Bytes per weight of a projection held this way (NF4: half a byte, plus an f32 absmax per
    /// 64; with double quantization an 8-bit one per 64 and an f32 per 256 of those).
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            BasePrecision::F32 => 4.0,
            BasePrecision::Bf16 => 2.0,
            BasePrecision::Nf4 => 0.5 + 4.0 / 64.0,
            BasePrecision::Nf4Dq => 0.5 + (1.0 + 4.0 / 256.0) / 64.0,
        }
    }
}

/// The frozen storage of a projection's weight, (out, in).
#[derive(Debug, Clone)]
pub enum BaseWeight {
    Dense(Tensor),
    /// A frozen weight held transposed, (in, out), in f32 or bf16: the forward's x·Wᵀ (twice per
    /// step with gradient checkpointing) multiplies by a contiguous operand, which candle's matmul
    /// runs 15-50% faster than a transposed view; the backward's g·W takes the view. A bf16 one
    /// is converted whole for each product, as an NF4 one is dequantized.
    Transposed(Tensor),
    Nf4(Arc<Nf4>),
    /// A frozen weight (out, in) kept in the bf16 or f16 its checkpoint stores (the embedding
    /// table and the head, the largest matrices of a small model: 0.5 GB of f32 each at Phi-2),
    /// converted to f32 a block of rows at a time for each product.
    Half(Tensor),
}

/// A weight as f32: itself when it is f32; a bf16 one converted on every core (a bf16 value is
/// the top half of an f32's bits); others through candle.
fn to_f32(t: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    if t.dtype() == DType::F32 {
        return Ok(t.clone());
    }
    let converted = {
        let (storage, layout) = t.storage_and_layout();
        match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(CpuStorage::BF16(v)), Some((a, b))) => {
                let mut out = vec![0f32; b - a];
                out.par_chunks_mut(1 << 14).zip(v[a..b].par_chunks(1 << 14)).for_each(|(o, s)| {
                    for (o, s) in o.iter_mut().zip(s) {
                        *o = f32::from_bits((s.to_bits() as u32) << 16);
                    }
                });
                Some(out)
            }
            _ => None,
        }
    };
    match converted {
        Some(out) => Tensor::from_vec(out, t.shape(), &Device::Cpu),
        None => t.to_dtype(DType::F32),
    }
}

/// Rows of a `Half` weight converted to f32 at once: about 32 MB of f32 per block.
fn half_block(cols: usize) -> usize {
    ((8 << 20) / cols.max(1)).max(1)
}

impl BaseWeight {
    pub(super) fn forward(&self, x2: &Tensor) -> Result<Tensor> {
        match self {
            // A trainable weight (full fine-tuning) goes through candle's matmul, whose backward
            // gives both gradients.
            BaseWeight::Dense(w) if w.is_variable() || !x2.track_op() => x2.matmul(&w.t()?),
            // A frozen one through `FrozenMatmul`: candle's matmul backward would also compute
            // the weight's gradient (as much work as the forward, and an out x in tensor per
            // layer held until backward ends) only to throw it away.
            BaseWeight::Dense(_) | BaseWeight::Transposed(_) | BaseWeight::Nf4(_) | BaseWeight::Half(_) => {
                x2.contiguous()?.apply_op1(FrozenMatmul { w: self.clone() })
            }
        }
    }
    /// x·Wᵀ on untracked tensors (inside lathe's ops). An NF4 weight is dequantized for this
    /// product only.
    pub fn apply(&self, x2: &Tensor) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => x2.matmul(&w.t()?),
            BaseWeight::Transposed(wt) => x2.matmul(&to_f32(wt)?),
            BaseWeight::Nf4(q) => x2.matmul(&Tensor::from_vec(q.dequantize_transposed(), (q.cols, q.rows), &Device::Cpu)?),
            BaseWeight::Half(w) => {
                let (out, cols) = w.dims2()?;
                let parts = (0..out).step_by(half_block(cols)).map(|s| x2.matmul(&self.rows(s, half_block(cols).min(out - s))?.t()?)).collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 1)
            }
        }
    }
    /// g·W: the gradient a frozen projection passes back to its input.
    pub fn apply_t(&self, g: &Tensor) -> Result<Tensor> {
        match self {
            BaseWeight::Transposed(wt) => g.matmul(&to_f32(wt)?.t()?),
            BaseWeight::Half(w) => {
                let (out, cols) = w.dims2()?;
                let mut acc: Option<Tensor> = None;
                for s in (0..out).step_by(half_block(cols)) {
                    let n = half_block(cols).min(out - s);
                    let part = g.narrow(1, s, n)?.matmul(&self.rows(s, n)?)?;
                    acc = Some(match acc {
                        Some(a) => (a + part)?,
                        None => part,
                    });
                }
                acc.ok_or_else(|| candle_core::Error::Msg("an empty weight".into()))
            }
            _ => g.matmul(&self.dense()?),
        }
    }
    /// Rows start..start+n of the weight (out, in) as f32: a view for a dense weight, a
    /// conversion for a 16-bit one.
    pub fn rows(&self, start: usize, n: usize) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => w.narrow(0, start, n),
            BaseWeight::Transposed(wt) => to_f32(&wt.narrow(1, start, n)?)?.t(),
            BaseWeight::Half(w) => to_f32(&w.narrow(0, start, n)?),
            BaseWeight::Nf4(_) => self.dense()?.narrow(0, start, n),
        }
    }
    /// (out, in).
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            BaseWeight::Dense(w) | BaseWeight::Half(w) => w.dims2(),
            BaseWeight::Transposed(wt) => wt.dims2().map(|(i, o)| (o, i)),
            BaseWeight::Nf4(q) => Ok((q.rows, q.cols)),
        }
    }
    pub(super) fn frozen(&self) -> bool {
        match self {
            BaseWeight::Dense(w) => !w.is_variable(),
            BaseWeight::Transposed(_) | BaseWeight::Nf4(_) | BaseWeight::Half(_) => true,
        }
    }
    /// The weight as an f32 tensor (an NF4 one dequantized, a new tensor each call).
    pub fn dense(&self) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => Ok(w.clone()),
            BaseWeight::Transposed(wt) => to_f32(wt)?.t()?.contiguous(),
            BaseWeight::Nf4(q) => Tensor::from_vec(q.dequantize(), (q.rows, q.cols), &Device::Cpu),
            BaseWeight::Half(w) => to_f32(w),
        }
    }
    /// A frozen weight as its checkpoint stores it: f32 dense, bf16 or f16 kept as `Half`.
    pub fn stored(w: Tensor) -> BaseWeight {
        match w.dtype() {
            DType::BF16 | DType::F16 => BaseWeight::Half(w),
            _ => BaseWeight::Dense(w),
        }
    }
    /// A weight read as f32, held as `precision` says.
    pub fn hold(w: Tensor, precision: BasePrecision) -> Result<BaseWeight> {
        match precision {
            BasePrecision::F32 => Ok(BaseWeight::Transposed(w.t()?.contiguous()?)),
            BasePrecision::Bf16 => Ok(BaseWeight::Transposed(w.t()?.contiguous()?.to_dtype(DType::BF16)?)),
            BasePrecision::Nf4 | BasePrecision::Nf4Dq => {
                let (rows, cols) = w.dims2()?;
                let values = w.flatten_all()?.to_vec1::<f32>()?;
                Ok(BaseWeight::Nf4(Arc::new(Nf4::quantize(&values, rows, cols, precision == BasePrecision::Nf4Dq))))
            }
        }
    }
}

/// y = x·Wᵀ with W constant: the backward returns only dL/dx = g·W.
pub struct FrozenMatmul {
    pub w: BaseWeight,
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
        let y = self.w.apply(&x)?;
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), y.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.w.apply_t(grad)?))
    }
}
