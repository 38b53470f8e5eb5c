//! The WebSocket listener's HTTP front, as pure functions (ARCHITECTURE §14): what a request
//! head asks for (the chat page, an upgrade, or something refused), the origin check, and
//! the bytes of each answer. No I/O here; `upgrade` reads and writes.

use crate::metrics::WsAnswer;

/// A request head may be at most this long (with its headers): a browser's is well
/// under 2 KiB, and nothing a-chat serves needs more.
pub const MAX_HEAD_BYTES: usize = 8192;

/// Headers parsed at most; more is answered 431.
const MAX_HEADERS: usize = 48;

/// The files of the chat page, compiled into the binary.
const INDEX_HTML: &[u8] = include_bytes!("page/index.html");
const CHAT_JS: &[u8] = include_bytes!("page/chat.js");
const CHAT_CSS: &[u8] = include_bytes!("page/chat.css");

/// The page loads only its own files and talks only to its own origin.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// What the WebSocket listener's front needs to answer: which pages may open a session
/// (`[websocket] allowed_origins`), and the page as served.
#[derive(Debug, Clone, Default)]
pub struct Front {
    /// Front let in besides the listener's own, lower-cased, without a trailing `/`.
    listed: Vec<String>,
    /// `"*"` was listed: any page.
    any: bool,
    /// The page, told whether logins take a password (`[auth]` on).
    index: Vec<u8>,
}

impl Front {
    pub fn new(allowed_origins: &[String], auth: bool) -> Front {
        let index = String::from_utf8_lossy(INDEX_HTML).replace(
            "data-auth=\"AUTH\"",
            if auth {
                "data-auth=\"on\""
            } else {
                "data-auth=\"off\""
            },
        );
        Front {
            any: allowed_origins.iter().any(|o| o == "*"),
            listed: allowed_origins.iter().map(|o| normal(o)).collect(),
            index: index.into_bytes(),
        }
    }

    /// Whether a page from `origin`, loaded from a listener reached as `host` (its `Host`
    /// header), may open a session. Its own page always may.
    fn allows(&self, origin: &str, host: Option<&str>, tls: bool) -> bool {
        let origin = normal(origin);
        let scheme = if tls { "https://" } else { "http://" };
        let same = host.is_some_and(|h| origin == format!("{scheme}{}", h.to_ascii_lowercase()));
        same || self.any || self.listed.contains(&origin)
    }
}

fn normal(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Checks one `allowed_origins` entry: `"*"`, or `scheme://host[:port]` with nothing after.
pub fn check_origin_setting(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Ok(());
    }
    let rest = (origin.strip_prefix("https://"))
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("an origin is http:// or https:// followed by a host (or \"*\" for any page)")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err("an origin is a scheme and a host[:port], with no path (as browsers send it)");
    }
    Ok(())
}

/// What a request head asks for, and what a-chat answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Switch to WebSocket: the bytes of the 101 answer.
    Upgrade(Vec<u8>),
    /// Anything else: the whole answer (the page, or a refusal), then the connection closes.
    Respond(Vec<u8>, WsAnswer),
}

/// Where a request head ends (after its blank line), once it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|at| at + 4)
}

/// Answers one whole request head (up to and including its blank line).
pub fn answer(head: &[u8], front: &Front, tls: bool) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return refusal(431, "too many headers"),
        _ => return refusal(400, "not an HTTP request"),
    }
    let header = |name: &str| {
        (request.headers.iter())
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    if request.method != Some("GET") {
        return refusal(405, "only GET is served here");
    }
    let path = request.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return match path {
            "/" => page(&front.index, "text/html; charset=utf-8"),
            "/chat.js" => page(CHAT_JS, "text/javascript; charset=utf-8"),
            "/chat.css" => page(CHAT_CSS, "text/css; charset=utf-8"),
            _ => refusal(404, "not found: the chat page is at /"),
        };
    }
    if path != "/" {
        return refusal(404, "not found: WebSocket sessions are opened at /");
    }
    if let Some(origin) = header("origin") {
        if !front.allows(origin, header("host"), tls) {
            return refusal(
                403,
                "this page's origin may not open a chat session here (see [websocket] allowed_origins)",
            );
        }
    }
    if header("sec-websocket-version") != Some("13") {
        let mut answer = refusal(426, "a-chat speaks WebSocket version 13");
        if let Answer::Respond(bytes, _) = &mut answer {
            let at = memchr::memmem::find(bytes, b"\r\n").map_or(0, |i| i + 2);
            bytes.splice(at..at, b"Sec-WebSocket-Version: 13\r\n".iter().copied());
        }
        return answer;
    }
    let key = match header("sec-websocket-key") {
        Some(key) if !key.is_empty() => key,
        _ => return refusal(400, "no Sec-WebSocket-Key"),
    };
    let accept = async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Answer::Upgrade(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// A file of the page, with headers that keep it from being framed, sniffed or stale.
fn page(body: &[u8], kind: &str) -> Answer {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nContent-Security-Policy: {PAGE_POLICY}\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Answer::Respond(bytes, WsAnswer::Page)
}

/// A refusal with a one-line body that says why.
pub fn refusal(status: u16, why: &str) -> Answer {
    let (text, answer) = match status {
        403 => ("Forbidden", WsAnswer::ForbiddenOrigin),
        404 => ("Not Found", WsAnswer::NotFound),
        405 => ("Method Not Allowed", WsAnswer::BadRequest),
        408 => ("Request Timeout", WsAnswer::BadRequest),
        426 => ("Upgrade Required", WsAnswer::BadRequest),
        431 => ("Request Header Fields Too Large", WsAnswer::BadRequest),
        _ => ("Bad Request", WsAnswer::BadRequest),
    };
    let body = format!("{why}\n");
    let bytes = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Answer::Respond(bytes.into_bytes(), answer)
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
