//! lathe: a terminal workstation for fine-tuning, querying and chatting with small language
//! models. `engine` does the work and knows nothing of terminals; `service` owns a workspace's
//! resources and is the one API over the engines; `app` (the workstation), `cli` and `bench`
//! call it; `ui` draws the app's state. ARCHITECTURE.md has the map; tests/layers.rs the rule.

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod engine;
pub mod logging;
pub mod present;
pub mod server;
pub mod service;
pub mod ui;
pub mod units;
