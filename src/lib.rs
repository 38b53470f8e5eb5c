//! a-chat: a hardened, observable line-protocol chat daemon. The binary's `main.rs` parses
//! the command line; everything else is here so tests and benchmarks can use it.
//! docs/ARCHITECTURE.md has the map of these modules and which way they depend.
//!
//! Where each part of the design lives:
//! - `protocol`: the wire protocol as pure functions (docs/ARCHITECTURE.md §1)
//! - `names`: the login rule and the canonical form of a login (§1)
//! - `config`: the configuration file (§3)
//! - `auth`: authenticated logins: the users file, hash checks, `a-chat passwd` (§9)
//! - `server`: accept loop (§4), router, readers, writers, and the drain (§5)
//! - `telemetry`, `metrics`: logs and counters (§6)
//! - `admin`, `notify`: the HTTP endpoint for metrics and health, systemd notification (§6)
//! - `client`, `screen`: the interactive client, what it shows, and the health probe (§2)
//! - `daemon`: the running daemon, the checks before a start, and its control surface
//! - `health`: starting, ready, draining (what `/readyz` says)
//! - `client_key`: what the per-address limits count as one client address
//! - `runtime`: the only module that names the async runtime

/// The version and the commit it was built from: `0.1.0 (1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("A_CHAT_COMMIT"), ")");

pub mod activation;
pub mod admin;
pub mod auth;
pub mod certificate;
pub mod client;
pub mod client_key;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod health;
pub mod logwriter;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod screen;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod transport;
