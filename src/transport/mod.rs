//! Chat from browsers (ARCHITECTURE §14): the WebSocket listener's HTTP front (the chat
//! page, the origin check, the upgrade) and the session that turns text frames into
//! protocol lines and lines into text frames. The reader and the writer see a session as
//! they see a TCP socket (`runtime::Conn`), so every rule of the chat applies unchanged.

pub mod http;
pub mod session;
pub mod upgrade;

pub use session::{Refused, Session};
