//! Exports: a model folder (with a run's LoRA adapter merged) written as GGUF for llama.cpp and
//! Ollama, quantized through llama.cpp's own quantizer (every type it offers, `quant`), weighed by
//! an importance matrix computed from the user's own data when one is given (`imatrix`).

pub mod gguf;
pub mod imatrix;
pub mod quant;
