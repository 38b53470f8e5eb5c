//! Authenticated logins (ARCHITECTURE §9): with `[auth] users_file` set, the first line is
//! `NAME PASSWORD`, checked against the argon2id hashes of the users file before the
//! login goes on to the router like any other.
//!
//! [`Auth`] holds what the checks share: the users file in force (swapped whole on
//! reload), the per-address failure limiter (kept across reloads), and the queue of
//! checks: at most one hash check per core but one at once, each on the runtime's
//! blocking threads, so a login storm waits here and never stalls the connection threads.
//! The queue is bounded and serves addresses without recent failures first (`queue`).
//!
//! A granted login carries the users file it was checked against ([`Granted`]); the
//! router asks it again when the login takes effect, so that a reload that removed the
//! user (or changed the password) in between wins.
//!
//! - `credentials`: the login line, split into name and password
//! - `users`: the users file, and the password check against it
//! - `error`: why the users file cannot be used
//! - `hash`: argon2id PHC strings (make, parse, verify)
//! - `limiter`: failed logins per address
//! - `queue`: the bounded, two-class queue of logins waiting for a hash check
//! - `passwd`: the `a-chat passwd` command

mod credentials;
mod error;
pub mod hash;
mod limiter;
pub mod passwd;
mod queue;
mod users;

pub use credentials::{parse as parse_credentials, Credentials};
pub use error::{Problem, UsersError};
pub use limiter::{Attempt, Limiter};
pub use queue::MAX_WAITING;
pub use users::Users;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::runtime;

/// Why a login was refused before the router saw it: the `reason` label of
/// `achat_auth_failures_total`.
pub use crate::metrics::AuthFailure as Failure;

impl Failure {
    /// What the client is told (after `error: `), before the connection closes.
    pub fn answer(self) -> &'static str {
        match self {
            Failure::BadCredentials => "authentication failed",
            Failure::RateLimited => "too many failed logins",
            Failure::Busy => "server busy, try again",
        }
    }
}

/// How often a full queue is logged as a warning at most; the rest are at debug.
const BUSY_WARN_EVERY: Duration = Duration::from_secs(60);

/// A login whose password was right under the users file it was checked against. The
/// router asks [`Granted::holds`] when the login takes effect: a reload may have come in
/// between.
pub struct Granted {
    /// Where the users file in force is found when the login takes effect.
    auth: Arc<Auth>,
    /// The users file the password was checked against.
    users: Arc<Users>,
}

impl Granted {
    /// Whether the login of `name` still holds: the users file is the one it was checked
    /// against, or one that gives `name` the same password hash.
    pub fn holds(&self, name: &str) -> bool {
        let now = self.auth.users();
        Arc::ptr_eq(&now, &self.users) || now.same_password(&self.users, name)
    }
}

/// A checked attempt's place in the limiter until its hash check runs: dropped before
/// (queue full, client gone or timed out, drain), the attempt is no failure.
struct Pending<'a> {
    auth: &'a Auth,
    peer: IpAddr,
    /// Set once the check has run (or the line was refused without needing one).
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            lock(&self.auth.limiter).unchecked(self.peer);
        }
    }
}

/// The daemon's authentication state, shared by every connection.
pub struct Auth {
    /// The users file in force: each check takes it as it is when the hash check runs
    /// (not when it began to wait), so a reload reaches every login still waiting.
    users: RwLock<Arc<Users>>,
    /// Failed logins per address; kept across reloads.
    limiter: Mutex<Limiter>,
    /// The hash checks: one slot per check allowed at once (one per core but one, at
    /// least one), held from before a check starts on a blocking thread until it is done
    /// there, and a bounded two-class queue of logins waiting for a slot.
    checks: Arc<queue::Queue>,
    /// When a full queue was last logged as a warning.
    busy_warned: Mutex<Option<Instant>>,
}

impl Auth {
    /// Reads the users file named in `[auth]`.
    pub fn load(config: &AuthConfig) -> Result<Auth, UsersError> {
        hash::return_memory_after_checks();
        let users = Users::load(Path::new(&config.users_file))?;
        // A core is left to the chat: a storm of logins must not take every core from the
        // connections' thread (measured on 2 cores with both taken: a chat's p99 went from
        // 0.2-0.5 ms to 4-6 ms during 200 wrong logins).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = cores.saturating_sub(1).max(1);
        Ok(Auth {
            users: RwLock::new(Arc::new(users)),
            limiter: Mutex::new(Limiter::new(config.max_failures_per_ip)),
            checks: queue::Queue::new(cores, queue::MAX_WAITING),
            busy_warned: Mutex::new(None),
        })
    }

    /// Re-reads the users file and takes the new `max_failures_per_ip`; on error the users
    /// in force stay. Logins already granted are not touched here: whoever reloads asks
    /// [`Auth::contains`] about each to find the removed ones.
    pub fn reload(&self, config: &AuthConfig) -> Result<(), UsersError> {
        if config.users_file.is_empty() {
            return Err(UsersError::Emptied);
        }
        let previous = self.users();
        let fresh = Arc::new(Users::load_after(
            Path::new(&config.users_file),
            Some(&previous),
        )?);
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        lock(&self.limiter).set_max(config.max_failures_per_ip);
        Ok(())
    }

    /// The users file in force.
    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `name` may still log in under the users file in force.
    pub fn contains(&self, name: &str) -> bool {
        self.users().contains(name)
    }

    /// Checks a login line `NAME PASSWORD` from `peer` and returns the name if the
    /// password is right, with what the router asks again when the login takes effect.
    /// The password is never logged.
    ///
    /// An address over its failure limit is refused before any check; otherwise the check
    /// waits in the queue (refused at once when it is full), runs on a blocking thread
    /// against the users file in force when it starts, and a failure answers no sooner
    /// than the costliest user's check would.
    pub async fn check<'a>(
        self: &Arc<Self>,
        peer: IpAddr,
        line: &'a str,
        metrics: &Arc<Metrics>,
    ) -> Result<(&'a str, Granted), Failure> {
        let attempt = lock(&self.limiter).attempt(peer, Instant::now());
        let suspect = match attempt {
            Attempt::Check { suspect } => suspect,
            Attempt::Refuse { first } => {
                metrics.auth_failed(Failure::RateLimited);
                if first {
                    warn!(
                        %peer,
                        "too many failed logins from this address: refusing its logins without a check for up to a minute (max_failures_per_ip)"
                    );
                } else {
                    debug!("login refused: too many failed logins from this address");
                }
                return Err(Failure::RateLimited);
            }
        };
        let mut pending = Pending {
            auth: self,
            peer,
            settled: false,
        };
        let Some(credentials) = parse_credentials(line) else {
            pending.settled = true;
            metrics.auth_failed(Failure::BadCredentials);
            info!("login refused: authentication failed (no password on the login line)");
            return Err(Failure::BadCredentials);
        };
        let class = match suspect {
            true => queue::Class::Suspect,
            false => queue::Class::Clean,
        };
        let Ok(slot) = self.checks.enter(class).await else {
            metrics.auth_failed(Failure::Busy);
            self.log_busy();
            return Err(Failure::Busy);
        };
        pending.settled = true;
        metrics.auth_checks.inc();
        let (name, password) = (credentials.name.to_owned(), credentials.password.to_owned());
        let (auth, counters) = (self.clone(), metrics.clone());
        let (right, known, users, took) = runtime::spawn_blocking(move || {
            let _slot = slot;
            // Where checks must share a core with the chat (one core), they yield it.
            runtime::lower_thread_priority();
            // Taken now that the check runs, not when it began to wait: a reload that
            // came meanwhile reaches it.
            let users = auth.users();
            let started = Instant::now();
            let right = users.verify(&name, &password);
            (counters.timings.password_check).observe(started.elapsed().as_secs_f64());
            // Counted here, so that a check whose client left meanwhile counts too.
            match right {
                true => lock(&auth.limiter).succeeded(peer),
                false => counters.auth_failed(Failure::BadCredentials),
            }
            (right, users.contains(&name), users, started.elapsed())
        })
        .await;
        if right {
            let granted = Granted {
                auth: self.clone(),
                users,
            };
            return Ok((credentials.name, granted));
        }
        // A user with cheaper hash settings must not answer sooner than an unknown name.
        if let Some(rest) = users.floor().checked_sub(took) {
            runtime::sleep(rest).await;
        }
        if known {
            info!(
                user = credentials.name,
                "login refused: authentication failed (wrong password)"
            );
        } else {
            // The name may be a password typed in the wrong place: not logged.
            info!("login refused: authentication failed (unknown user)");
        }
        Err(Failure::BadCredentials)
    }

    /// A login refused because the queue was full: one warning a minute, the rest debug.
    fn log_busy(&self) {
        let now = Instant::now();
        let mut last = lock(&self.busy_warned);
        if last.is_none_or(|at| now.duration_since(at) >= BUSY_WARN_EVERY) {
            *last = Some(now);
            warn!(
                waiting = queue::MAX_WAITING,
                "login refused: the queue of password checks is full (server busy, try again); a login flood? Further refusals within a minute are logged at debug"
            );
        } else {
            debug!("login refused: the queue of password checks is full");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(users: &str, max: u32) -> (Arc<Auth>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, users).unwrap();
        let config = AuthConfig {
            users_file: path.display().to_string(),
            max_failures_per_ip: max,
        };
        (Arc::new(Auth::load(&config).unwrap()), dir)
    }

    #[test]
    fn a_check_grants_the_right_password_and_refuses_the_rest_alike() {
        let hash = hash::make(b"pw", hash::tests::cheap()).unwrap();
        let (auth, _dir) = auth_with(&format!("[users]\nalice = \"{hash}\"\n"), 3);
        let metrics = Arc::new(Metrics::new());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let check = |line| runtime::block_on(auth.check(peer, line, &metrics)).map(|(n, _)| n);
        assert_eq!(check("alice pw"), Ok("alice"));
        assert_eq!(check("alice wrong"), Err(Failure::BadCredentials));
        assert_eq!(check("mallory pw"), Err(Failure::BadCredentials));
        assert_eq!(check("alice"), Err(Failure::BadCredentials));
        assert_eq!(check("alice pw"), Err(Failure::RateLimited));
        assert_eq!(
            metrics.auth_checks.get(),
            3,
            "no check without a password or over the limit"
        );
        assert_eq!(metrics.auth_failures(Failure::BadCredentials), 3);
        assert_eq!(metrics.auth_failures(Failure::RateLimited), 1);
        assert!(auth.contains("alice") && !auth.contains("mallory"));
    }

    #[test]
    fn a_reload_swaps_the_users_and_a_bad_file_keeps_them() {
        let hash = hash::make(b"pw", hash::tests::cheap()).unwrap();
        let (auth, dir) = auth_with(&format!("[users]\nalice = \"{hash}\"\n"), 3);
        let path = dir.path().join("users.toml");
        let config = AuthConfig {
            users_file: path.display().to_string(),
            max_failures_per_ip: 3,
        };
        std::fs::write(&path, format!("[users]\nbob = \"{hash}\"\n")).unwrap();
        auth.reload(&config).unwrap();
        assert!(auth.contains("bob") && !auth.contains("alice"));
        std::fs::write(&path, "[users]\nbob = \"nope\"\n").unwrap();
        assert!(auth.reload(&config).is_err());
        assert!(auth.contains("bob"), "the users in force stay");
        let off = AuthConfig {
            users_file: String::new(),
            ..config
        };
        assert!(matches!(auth.reload(&off), Err(UsersError::Emptied)));
    }

    #[test]
    fn a_grant_holds_until_a_reload_removes_the_user_or_changes_the_password() {
        let hash = |pw: &[u8]| hash::make(pw, hash::tests::cheap()).unwrap();
        let (a, b) = (hash(b"pw"), hash(b"pw"));
        let (auth, dir) = auth_with(&format!("[users]\nalice = \"{a}\"\nbob = \"{b}\"\n"), 3);
        let path = dir.path().join("users.toml");
        let config = AuthConfig {
            users_file: path.display().to_string(),
            max_failures_per_ip: 3,
        };
        let metrics = Arc::new(Metrics::new());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let grant = |line| {
            runtime::block_on(auth.check(peer, line, &metrics))
                .unwrap()
                .1
        };
        let (alice, bob) = (grant("alice pw"), grant("bob pw"));
        assert!(alice.holds("alice") && bob.holds("bob"));
        let new_b = hash(b"new");
        std::fs::write(
            &path,
            format!("[users]\nalice = \"{a}\"\nbob = \"{new_b}\"\n"),
        )
        .unwrap();
        auth.reload(&config).unwrap();
        assert!(alice.holds("alice"), "the same password, another file");
        assert!(!bob.holds("bob"), "the password changed");
        std::fs::write(&path, format!("[users]\nbob = \"{new_b}\"\n")).unwrap();
        auth.reload(&config).unwrap();
        assert!(!alice.holds("alice"), "the user was removed");
    }
}
