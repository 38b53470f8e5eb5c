//! The reader's first line: the login, checked (by `names`, and by `auth` when
//! `[auth]` is on), asked of the router, and refused with a clear line when it cannot be
//! had.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use tracing::{debug, info};

use super::{End, Input, Reader};
use crate::metrics::{looks_like_tls, CloseReason, Garbage, Refusal};
use crate::names::{self, LoginError};
use crate::protocol::{self, LineFramer};
use crate::server::prelogin;
use crate::server::router::Event;

impl Reader {
    /// Reads the login line, asks the router for it, and returns it once granted.
    pub(super) async fn login(&mut self, framer: &mut LineFramer) -> Result<Arc<str>, End> {
        let deadline = self.ctx.limits.login_timeout;
        let started = self.accepted;
        let line = loop {
            if looks_like_tls(framer.front()) {
                prelogin::garbage(&self.outbox, &self.ctx.metrics, Garbage::TlsOnPlaintext);
                return Err(End::Closed);
            }
            if let Some(line) = framer.next_line() {
                break line.map(str::to_owned);
            }
            let left = deadline.saturating_sub(started.elapsed());
            match self.read(framer, left.max(Duration::from_millis(1))).await {
                Input::Read(Ok(0)) => {
                    self.outbox.info().ending(CloseReason::ClientClosed);
                    return Err(End::Closed);
                }
                Input::Read(Ok(_)) => {}
                Input::Read(Err(e)) => {
                    debug!(error = %e, "read failed before login");
                    self.read_failed(&e);
                    return Err(End::Closed);
                }
                Input::Timeout => {
                    self.outbox.info().ending(CloseReason::LoginTimeout);
                    // Slowloris crowds and port probes do this by the hundred: counted, and
                    // logged at debug only.
                    debug!("refused: no login within login_timeout");
                    self.ctx.metrics.refused(Refusal::LoginTimeout);
                    self.say(protocol::format_error("login timeout"));
                    return Err(End::Closed);
                }
                Input::Drain => return Err(End::Drain),
            }
        };
        let mut line = match line {
            Ok(line) => line,
            Err(e) => {
                prelogin::garbage(&self.outbox, &self.ctx.metrics, prelogin::kind_of(e));
                return Err(End::Closed);
            }
        };
        if line.is_empty() {
            // What `a-chat probe` sends: answered before any password check, so a health
            // check never counts as a failed login of its address.
            prelogin::probe(&self.outbox, &self.ctx.metrics);
            return Err(End::Closed);
        }
        let mut checked = None;
        if let Some(auth) = self.ctx.auth.clone() {
            let sent_more = framer.partial_len() > 0;
            // Boxed: only with `[auth]` does a login keep room for the password check.
            let (name, granted) = Box::pin(self.authenticate(&auth, line, sent_more)).await?;
            (line, checked) = (name, Some(granted));
        }
        let limits = &self.ctx.limits;
        if let Err(e) = names::validate_login(&line, limits.max_login_bytes, limits.login_charset) {
            return Err(self.refuse_login(e));
        }
        // Here, once per login, so that the router only compares.
        let look = names::canonical(&line).into_boxed_str();
        let certificate = match self.identity {
            true => Some(self.certified(&line, &look)?),
            false => None,
        };
        let login: Arc<str> = line.into();
        let (reply, granted) = oneshot::channel();
        let asked = self.events.send(Event::Login {
            conn: self.outbox.info().conn,
            login: login.clone(),
            look,
            outbox: self.outbox.clone(),
            checked,
            reply,
        });
        if asked.await.is_err() {
            return Err(End::Drain);
        }
        match granted.await {
            Ok(Ok(())) => {
                // Recorded first, so that this event already carries the login.
                self.span.record("login", &*login);
                let _ = self.outbox.info().login.set(login.clone());
                self.ctx.metrics.timings.logins.inc();
                match certificate {
                    Some(subject) => info!(certificate = %subject, "logged in"),
                    None => info!("logged in"),
                }
                Ok(login)
            }
            Ok(Err(e)) => Err(self.refuse_login(e)),
            Err(_) => Err(End::Drain),
        }
    }

    /// With `[tls] client_identity = "login"`: the login (of look `look`) must be one of
    /// the names of the client's certificate; the certificate's subject, for the log.
    fn certified(&self, login: &str, look: &str) -> Result<String, End> {
        let der = self.outbox.stream().peer_certificate();
        let names = der
            .as_deref()
            .map(crate::certificate::identity)
            .unwrap_or_default();
        if names.iter().any(|name| names::canonical(name) == look) {
            let subject = der.as_deref().and_then(crate::certificate::subject);
            return Ok(subject.unwrap_or_else(|| names.join(", ")));
        }
        Err(self.refuse_login(LoginError::NotCertified(login.to_owned(), names)))
    }

    fn refuse_login(&self, e: LoginError) -> End {
        if let LoginError::UsersChanged = e {
            return self.users_changed();
        }
        let why = match e {
            LoginError::Taken(_) => Refusal::LoginTaken,
            LoginError::ClusterUnavailable => Refusal::ClusterUnavailable,
            LoginError::Banned(_) => Refusal::Banned,
            _ => Refusal::InvalidLogin,
        };
        self.outbox.info().ending(match why {
            Refusal::LoginTaken => CloseReason::LoginTaken,
            Refusal::ClusterUnavailable => CloseReason::ClusterUnavailable,
            Refusal::Banned => CloseReason::Banned,
            _ => CloseReason::InvalidLogin,
        });
        if matches!(e, LoginError::ClusterUnavailable) {
            // Every client retrying while Redis is away must not fill the log (the
            // cluster link warns about that once, and the refusals are counted).
            debug!(reason = %e, "login refused");
        } else {
            info!(reason = %e, "login refused");
        }
        self.ctx.metrics.refused(why);
        self.say(protocol::format_error(&e));
        End::Closed
    }
}
