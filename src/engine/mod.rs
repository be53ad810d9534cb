//! All real work lives here. Nothing below `engine/` imports ratatui or crossterm: engines take
//! plain-data requests and report plain-data events, so the TUI, the CLI and tests drive them alike.

pub mod alloc;
pub mod info;
pub mod data;
pub mod embed;
pub mod export;
pub mod http;
pub mod infer;
pub mod jobs;
pub mod knowledge;
pub mod sysmon;
pub mod train;
pub mod types;
pub mod workspace;
