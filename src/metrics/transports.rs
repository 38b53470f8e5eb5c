//! Connections by the transport they arrived over (`tcp`, `tls`, `ws`, `wss`), and what the
//! WebSocket listener answered and refused (ARCHITECTURE §14).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::{label_set, Counters, LabelSet};
use super::Labels;

label_set! {
    /// What a chat connection arrived over: the `transport` label.
    pub enum Transport {
        Tcp => "tcp",
        Tls => "tls",
        /// WebSocket without TLS.
        Ws => "ws",
        /// WebSocket over TLS.
        Wss => "wss",
    }
}

label_set! {
    /// What the WebSocket listener answered a request with: the `answer` label of
    /// `achat_websocket_requests_total`.
    pub enum WsAnswer {
        /// 101: the session began.
        Upgraded => "upgraded",
        /// 200: the chat page or one of its files.
        Page => "page",
        /// 403: a page from an origin that `allowed_origins` does not list.
        ForbiddenOrigin => "forbidden_origin",
        /// 404: a path the listener does not serve.
        NotFound => "not_found",
        /// 400, 405, 426, 431: not a request a-chat can answer, or not a whole one in time.
        BadRequest => "bad_request",
        /// No whole request within `login_timeout`: closed without an answer.
        Timeout => "timeout",
    }
}

label_set! {
    /// Why a WebSocket session was closed for what its client sent: the `reason` label of
    /// `achat_websocket_refused_total`. Each is bad input and ends the session with a
    /// close frame that says so.
    pub enum WsRefusal {
        /// A binary frame (1003): a line is text.
        Binary => "binary",
        /// A frame or a message over `max_line_bytes` (1009).
        TooBig => "too_big",
        /// A newline inside a text frame (1007): one frame carries one line.
        Newline => "newline",
        /// Text that is not UTF-8 (1007).
        InvalidUtf8 => "invalid_utf8",
        /// A frame that breaks RFC 6455 (1002): unmasked, a bad opcode, a cut control frame.
        Protocol => "protocol",
    }
}

/// The counters of [`Transport`] and of the WebSocket listener.
#[derive(Debug)]
pub struct Transports {
    /// Connections that reached the chat (past any TLS handshake and WebSocket upgrade).
    opened: Counters<Transport>,
    /// Of those, open now.
    open: [Gauge; 4],
    /// `achat_websocket_requests_total{answer}`.
    answers: Counters<WsAnswer>,
    /// `achat_websocket_refused_total{reason}`.
    refusals: Counters<WsRefusal>,
}

impl Transports {
    pub fn register(registry: &mut Registry) -> Transports {
        let opened = Family::<Labels, Counter>::default();
        registry.register(
            "transport_connections",
            "Chat connections by the transport they arrived over (tcp, tls, ws, wss)",
            opened.clone(),
        );
        let open_family = Family::<Labels, Gauge>::default();
        registry.register(
            "transport_connections_open",
            "Chat connections open now, by transport",
            open_family.clone(),
        );
        let open = [
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .map(|t| open_family.get_or_create_owned(&vec![("transport", t.label())]));
        let answers = Family::<Labels, Counter>::default();
        registry.register(
            "websocket_requests",
            "HTTP requests on the WebSocket listeners, by answer",
            answers.clone(),
        );
        let refusals = Family::<Labels, Counter>::default();
        registry.register(
            "websocket_refused",
            "WebSocket sessions closed for what their client sent, by reason",
            refusals.clone(),
        );
        Transports {
            opened: Counters::new(&opened, "transport"),
            open,
            answers: Counters::new(&answers, "answer"),
            refusals: Counters::new(&refusals, "reason"),
        }
    }

    /// A connection over `t` reached the chat; [`Transports::closed`] undoes the gauge.
    pub fn opened(&self, t: Transport) {
        self.opened.inc(t);
        self.open[t.index()].inc();
    }

    pub fn closed(&self, t: Transport) {
        self.open[t.index()].dec();
    }

    pub fn answered(&self, answer: WsAnswer) {
        self.answers.inc(answer);
    }

    pub fn answers(&self, answer: WsAnswer) -> u64 {
        self.answers.get(answer)
    }

    pub fn refused(&self, why: WsRefusal) {
        self.refusals.inc(why);
    }

    pub fn refusals(&self, why: WsRefusal) -> u64 {
        self.refusals.get(why)
    }
}
