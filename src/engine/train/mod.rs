//! Training (issue 4, in progress): model configs first. The trainable candle models, LoRA, the
//! loop and checkpoints build on this.

pub mod config;
