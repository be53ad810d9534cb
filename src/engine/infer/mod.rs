//! Inference: GGUF models through llama.cpp (llama-cpp-2), owned on one thread.

pub mod llama;
pub mod worker;
