//! Inference: GGUF models through llama.cpp (llama-cpp-2), owned on one thread.

pub mod library;
pub mod llama;
pub mod machine_turns;
pub mod perplexity;
pub mod remote;
pub mod slots;
pub mod turns;
pub mod worker;
