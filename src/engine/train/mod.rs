//! Training: model configs, a trainable candle decoder for Llama / Phi / Qwen2 with LoRA, the
//! tokenizer and chat template, the training loop with checkpoints, and the runs it records.

pub mod base;
pub mod checkpoint;
pub mod config;
pub mod memory;
pub mod prepare;
pub mod spec;
pub mod step;
pub mod model;
pub mod nf4;
pub mod ops;
pub mod rng;
pub mod weights;
pub mod export;
pub mod optim;
pub mod text;
pub mod trainer;
pub mod demo;
