//! The reader's password check (with `[auth] users_file`): the login line waits for its
//! hash check within `login_timeout`, and is let go without one when the drain begins or
//! the client leaves meanwhile.

use std::sync::Arc;

use futures_lite::future::FutureExt as _;
use tracing::{debug, info};

use super::{End, Reader};
use crate::auth::{Auth, Failure, Granted};
use crate::metrics::{CloseReason, Refusal};
use crate::protocol;
use crate::runtime;

impl Reader {
    /// With `[auth]`: checks the login line `NAME PASSWORD` within what is left of
    /// `login_timeout`, and gives back the name to log in with; a refusal is answered and
    /// ends the connection. The line holds the password: it goes nowhere else. A client
    /// that closes after its login line, before the check answers, is let go (a check
    /// that never began is no failure of its address).
    pub(super) async fn authenticate(
        &self,
        auth: &Arc<Auth>,
        line: String,
        sent_more: bool,
    ) -> Result<(String, Granted), End> {
        // The client's address as accepted, or as its balancer's PROXY header gave it.
        let peer = self.outbox.info().peer.ip();
        let left = self
            .ctx
            .limits
            .login_timeout
            .saturating_sub(self.accepted.elapsed());
        let checked = async { Ok(auth.check(peer, &line, &self.ctx.metrics).await) };
        // What ended the wait instead: the deadline (`None`), the drain, or the client.
        let timeout = async {
            runtime::sleep(left).await;
            Err(None)
        };
        let drain = async {
            self.ctx.shutdown.wait().await;
            Err(Some(End::Drain))
        };
        // A client that sent more than its login line (and may have closed its side
        // since, as `a-chat client` does at the end of its input) is still served; so is
        // a TLS client, whose session may hold lines the socket no longer shows.
        let gone = async {
            match sent_more || self.outbox.stream().is_buffered() {
                true => futures_lite::future::pending().await,
                false => self.outbox.stream().closed().await,
            }
            Err(Some(End::Closed))
        };
        match checked.or(drain).or(timeout).or(gone).await {
            Ok(Ok((name, granted))) => Ok((name.to_owned(), granted)),
            Ok(Err(why)) => {
                self.outbox.info().ending(why.into());
                self.say(protocol::format_error(why.answer()));
                Err(End::Closed)
            }
            Err(Some(End::Closed)) => {
                debug!("client closed the connection while its login waited for a check");
                self.outbox.info().ending(CloseReason::ClientClosed);
                Err(End::Closed)
            }
            Err(None) => {
                self.outbox.info().ending(CloseReason::LoginTimeout);
                info!("refused: login not checked within login_timeout");
                self.ctx.metrics.refused(Refusal::LoginTimeout);
                self.say(protocol::format_error("login timeout"));
                Err(End::Closed)
            }
            Err(Some(end)) => Err(end),
        }
    }

    /// The router found that a reload replaced the users file while the password was
    /// checked, and the new file removed the user or changed the password: answered like
    /// any failed check.
    pub(super) fn users_changed(&self) -> End {
        let failure = Failure::BadCredentials;
        self.ctx.metrics.auth_failed(failure);
        self.outbox.info().ending(failure.into());
        info!("login refused: the users file was reloaded while the password was checked");
        self.say(protocol::format_error(failure.answer()));
        End::Closed
    }
}
