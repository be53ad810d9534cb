//! The workstation: terminal setup and restore, the event loop, actions, the reducer and the
//! keymap. `effects` is where it meets the service.

pub mod action;
pub mod chat;
pub mod chat_update;
pub mod data;
pub mod effects;
pub mod keymap;
pub mod knowledge;
pub mod models;
pub mod runtime;
pub mod shell;
pub mod state;
pub mod system;
pub mod terminal;
pub mod train;
pub mod training;
pub mod wrap;
