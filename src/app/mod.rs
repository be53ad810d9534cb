//! The TUI runtime: terminal setup and restore, the event loop, actions, the reducer and the
//! keymap. This is the only place where the UI and the engines meet.

pub mod action;
pub mod chat;
pub mod data;
pub mod keymap;
pub mod runtime;
pub mod state;
pub mod terminal;
pub mod train;
