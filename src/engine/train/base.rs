//! The frozen base weight of a projection and the product through it: dense today, the type that
//! QLoRA's quantized stores extend. Its backward passes the gradient to the input only (the
//! weight learns nothing), so adapters below a frozen layer still learn.

use candle_core::{CpuStorage, Device, Tensor};

type Result<T> = candle_core::Result<T>;

/// The frozen storage of a projection's weight, (out, in). QLoRA adds a quantized variant whose
/// forward dequantizes; nothing else in the model changes.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    Dense(Tensor),
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
            BaseWeight::Dense(_) => x2.contiguous()?.apply_op1(FrozenMatmul { w: self.clone() }),
        }
    }
    /// x·Wᵀ on untracked tensors (inside lathe's ops).
    pub fn apply(&self, x2: &Tensor) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => x2.matmul(&w.t()?),
        }
    }
    /// g·W: the gradient a frozen projection passes back to its input.
    pub fn apply_t(&self, g: &Tensor) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => g.matmul(w),
        }
    }
    pub(super) fn frozen(&self) -> bool {
        match self {
            BaseWeight::Dense(w) => !w.is_variable(),
        }
    }
    pub fn dense(&self) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => Ok(w.clone()),
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
