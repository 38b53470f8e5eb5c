//! The running daemon: what lives as long as the process, and the control surface an
//! operator acts through (docs/ARCHITECTURE.md §6, §11).

pub mod ask;
pub mod control;
