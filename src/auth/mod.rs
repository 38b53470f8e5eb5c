//! Authenticated logins (ARCHITECTURE §9): with `[auth] users_file` set, the first line is
//! `NAME PASSWORD`, checked against the argon2id hashes of the users file before the
//! login goes on to the router like any other.
//!
//! [`Auth`] holds what the checks share: the users file in force (swapped whole on
//! reload), the per-address failure limiter (kept across reloads), and the pool bound: at
//! most one hash check per core at once, each on the runtime's blocking threads, so a
//! login storm queues here and never stalls the connection threads.
//!
//! - `credentials`: the login line, split into name and password
//! - `users`: the users file, and the password check against it
//! - `hash`: argon2id PHC strings (make, parse, verify)
//! - `limiter`: failed logins per address
//! - `passwd`: the `a-chat passwd` command

mod credentials;
pub mod hash;
mod limiter;
pub mod passwd;
mod users;

pub use credentials::{parse as parse_credentials, Credentials};
pub use limiter::{Attempt, Limiter};
pub use users::Users;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_lock::Semaphore;
use tracing::{debug, info, warn};

use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::runtime;

/// Why a login was refused before the router saw it: the `reason` label of
/// `achat_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Unknown name, wrong password, or a line without a password: one answer for all.
    BadCredentials,
    /// Too many failures from the address within a minute: refused without a check.
    RateLimited,
}

impl Failure {
    pub const ALL: [Failure; 2] = [Failure::BadCredentials, Failure::RateLimited];

    pub fn label(self) -> &'static str {
        match self {
            Failure::BadCredentials => "bad_credentials",
            Failure::RateLimited => "rate_limited",
        }
    }

    /// What the client is told (after `error: `), before the connection closes.
    pub fn answer(self) -> &'static str {
        match self {
            Failure::BadCredentials => "authentication failed",
            Failure::RateLimited => "too many failed logins",
        }
    }
}

/// The daemon's authentication state, shared by every connection.
pub struct Auth {
    /// The users file in force: each check takes it as it is when the check starts, so a
    /// reload reaches the next login.
    users: RwLock<Arc<Users>>,
    /// Failed logins per address; kept across reloads.
    limiter: Mutex<Limiter>,
    /// One permit per hash check allowed at once (one per core but one, at least one): a
    /// check holds it from before it starts on a blocking thread until it is done there.
    checks: Arc<Semaphore>,
}

impl Auth {
    /// Reads the users file named in `[auth]`.
    pub fn load(config: &AuthConfig) -> Result<Auth, String> {
        let users = Users::load(Path::new(&config.users_file))?;
        // A core is left to the chat: a storm of logins must not take every core from the
        // connections' thread (measured on 2 cores with both taken: a chat's p99 went from
        // 0.2-0.5 ms to 4-6 ms during 200 wrong logins).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = cores.saturating_sub(1).max(1);
        Ok(Auth {
            users: RwLock::new(Arc::new(users)),
            limiter: Mutex::new(Limiter::new(config.max_failures_per_ip)),
            checks: Arc::new(Semaphore::new(cores)),
        })
    }

    /// Re-reads the users file and takes the new `max_failures_per_ip`; on error the users
    /// in force stay. Logins already granted are not touched here: whoever reloads asks
    /// [`Auth::contains`] about each to find the removed ones.
    pub fn reload(&self, config: &AuthConfig) -> Result<(), String> {
        if config.users_file.is_empty() {
            return Err(
                "[auth] users_file cannot be emptied by a reload: turning authentication off needs a restart"
                    .into(),
            );
        }
        let fresh = Arc::new(Users::load(Path::new(&config.users_file))?);
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
    /// password is right. The password is never logged.
    ///
    /// An address over its failure limit is refused before any check; otherwise the check
    /// waits for a permit and runs on a blocking thread, as long for an unknown name as
    /// for a known one.
    pub async fn check<'a>(
        &self,
        peer: IpAddr,
        line: &'a str,
        metrics: &Metrics,
    ) -> Result<&'a str, Failure> {
        let attempt = lock(&self.limiter).attempt(peer, Instant::now());
        if let Attempt::Refuse { first } = attempt {
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
        let Some(credentials) = parse_credentials(line) else {
            metrics.auth_failed(Failure::BadCredentials);
            info!("login refused: authentication failed (no password on the login line)");
            return Err(Failure::BadCredentials);
        };
        let users = self.users();
        let (name, password) = (credentials.name.to_owned(), credentials.password.to_owned());
        let permit = self.checks.acquire_arc().await;
        metrics.auth_checks.inc();
        let (right, known) = runtime::spawn_blocking(move || {
            let _permit = permit;
            // Where checks must share a core with the chat (one core), they yield it.
            runtime::lower_thread_priority();
            (users.verify(&name, &password), users.contains(&name))
        })
        .await;
        if right {
            lock(&self.limiter).succeeded(peer);
            return Ok(credentials.name);
        }
        metrics.auth_failed(Failure::BadCredentials);
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
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(users: &str, max: u32) -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, users).unwrap();
        let config = AuthConfig {
            users_file: path.display().to_string(),
            max_failures_per_ip: max,
        };
        (Auth::load(&config).unwrap(), dir)
    }

    #[test]
    fn a_check_grants_the_right_password_and_refuses_the_rest_alike() {
        let hash = hash::make(b"pw", hash::tests::cheap()).unwrap();
        let (auth, _dir) = auth_with(&format!("[users]\nalice = \"{hash}\"\n"), 3);
        let metrics = Metrics::new();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let check = |line| runtime::block_on(auth.check(peer, line, &metrics));
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
        assert!(auth.reload(&off).unwrap_err().contains("restart"));
    }
}
