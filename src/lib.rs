//! lathe: a terminal workstation for fine-tuning, querying and chatting with small language
//! models. `engine` does the work and knows nothing of terminals; `ui` draws state and knows
//! nothing of engines; `app` joins them; `cli` drives the engines headless.

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod logging;
pub mod ui;
pub mod units;
