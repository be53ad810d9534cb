//! Exports: a model folder (with a run's LoRA adapter merged) written as GGUF for llama.cpp and
//! Ollama, quantized through llama.cpp's own quantizer.

pub mod gguf;
