//! Timed bans, set by an operator over the admin endpoint: by login (found by its look,
//! as the chat finds recipients) or by address or network (an IPv6 address without a
//! prefix bans its /64, as the per-address limits count it). A banned address is refused
//! at accept, a banned login at login, each with a clear line; bans outlive reloads (they
//! are the daemon's, not the file's) and end by themselves or when lifted.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::conninfo::json_string as quoted;
use crate::proxy::Source;

/// The most bans held at once: each connect looks at every address ban.
pub const MAX_BANS: usize = 10_000;
/// The longest a ban may last.
pub const MAX_BAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a ban shuts out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A login, by its look (`names::canonical`).
    Login(String),
    /// An address or a network.
    Net(Source),
}

/// One ban.
#[derive(Debug, Clone)]
pub struct Ban {
    /// Its number, to lift it by.
    pub id: u64,
    pub target: Target,
    /// What the operator wrote (the login or the network as given), for listings.
    pub shown: String,
    /// When it ends.
    pub until: Instant,
    /// The same, as a wall-clock time for listings.
    pub until_unix: u64,
    /// Why, as the operator said (shown to the banned client).
    pub reason: Option<String>,
    /// The name of the token that set it.
    pub by: Arc<str>,
}

/// Why a ban cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    #[error("{0:?} is not an address or a network: write e.g. 192.0.2.7, 192.0.2.0/24 or 2001:db8::1 (its /64)")]
    NotANet(String),
    #[error("a ban lasts from 1 s to 366 days")]
    Duration,
    #[error("{MAX_BANS} bans are held already: lift some first")]
    Full,
}

/// The bans in force.
#[derive(Default)]
pub struct Bans {
    /// Bans in force, oldest first, with the next id; expired ones are removed when the
    /// list is next changed or listed.
    state: RwLock<(Vec<Ban>, u64)>,
}

impl Bans {
    /// Bans `target` for `lasting`; the ban as set.
    pub fn add(
        &self,
        target: Target,
        shown: &str,
        lasting: Duration,
        reason: Option<String>,
        by: Arc<str>,
    ) -> Result<Ban, BanError> {
        if lasting < Duration::from_secs(1) || lasting > MAX_BAN {
            return Err(BanError::Duration);
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        state.0.retain(|ban| ban.until > now);
        if state.0.len() >= MAX_BANS {
            return Err(BanError::Full);
        }
        state.1 += 1;
        let until_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| (d + lasting).as_secs());
        let ban = Ban {
            id: state.1,
            target,
            shown: shown.to_owned(),
            until: now + lasting,
            until_unix,
            reason,
            by,
        };
        state.0.push(ban.clone());
        Ok(ban)
    }

    /// Lifts ban `id`; false when there is none.
    pub fn lift(&self, id: u64) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let before = state.0.len();
        state.0.retain(|ban| ban.id != id);
        state.0.len() != before
    }

    /// The ban in force on `ip`, if any.
    pub fn on_address(&self, ip: IpAddr) -> Option<Ban> {
        self.find(|target| matches!(target, Target::Net(net) if net.contains(ip)))
    }

    /// The ban in force on a login of look `look`, if any.
    pub fn on_login(&self, look: &str) -> Option<Ban> {
        self.find(|target| matches!(target, Target::Login(l) if l == look))
    }

    /// Whether any ban is held (a connect then pays for no lock).
    pub fn is_empty(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .is_empty()
    }

    fn find(&self, hit: impl Fn(&Target) -> bool) -> Option<Ban> {
        self.find_at(hit, Instant::now())
    }

    fn find_at(&self, hit: impl Fn(&Target) -> bool, now: Instant) -> Option<Ban> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .0
            .iter()
            .find(|ban| ban.until > now && hit(&ban.target))
            .cloned()
    }

    /// Every ban in force, as `GET /bans` lists them.
    pub fn json(&self) -> String {
        let now = Instant::now();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.0.retain(|ban| ban.until > now);
        let rows: Vec<String> = state.0.iter().map(Ban::json).collect();
        format!("{{\"bans\":[{}]}}\n", rows.join(","))
    }
}

impl Ban {
    /// One ban as a JSON object.
    pub fn json(&self) -> String {
        let kind = match self.target {
            Target::Login(_) => "login",
            Target::Net(_) => "address",
        };
        let target = match &self.target {
            Target::Login(_) => self.shown.clone(),
            Target::Net(net) => net.to_string(),
        };
        format!(
            "{{\"id\":{},\"{kind}\":{},\"until\":{},\"reason\":{},\"by\":{}}}",
            self.id,
            quoted(&target),
            self.until_unix,
            self.reason.as_deref().map_or("null".into(), quoted),
            quoted(&self.by)
        )
    }

    /// The line a banned client reads before it is closed.
    pub fn refusal(&self, what: &str) -> String {
        match &self.reason {
            Some(reason) => format!("{what} is banned: {reason}"),
            None => format!("{what} is banned"),
        }
    }
}

/// An address ban's target: `192.0.2.7`, `192.0.2.0/24`, `2001:db8::1` (its /64) or
/// `2001:db8::/32`.
pub fn net(text: &str) -> Result<Source, BanError> {
    let bad = || BanError::NotANet(text.to_owned());
    let ip_only: Option<IpAddr> = text.parse().ok();
    let written = match ip_only {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{v6}/64"),
        },
        _ => text.to_owned(),
    };
    written.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by() -> Arc<str> {
        "ops".into()
    }

    #[test]
    fn address_bans_cover_their_network_and_ipv6_by_its_64() {
        let bans = Bans::default();
        assert!(bans.is_empty());
        let hour = Duration::from_secs(3600);
        let v4 = net("192.0.2.0/24").unwrap();
        bans.add(Target::Net(v4), "192.0.2.0/24", hour, None, by())
            .unwrap();
        let v6 = net("2001:db8::1").unwrap();
        let ban = bans
            .add(
                Target::Net(v6),
                "2001:db8::1",
                hour,
                Some("spam".into()),
                by(),
            )
            .unwrap();
        assert!(bans.on_address("192.0.2.200".parse().unwrap()).is_some());
        assert!(bans
            .on_address("::ffff:192.0.2.9".parse().unwrap())
            .is_some());
        assert!(bans.on_address("192.0.3.1".parse().unwrap()).is_none());
        assert!(bans
            .on_address("2001:db8::ffff:7".parse().unwrap())
            .is_some());
        assert!(bans
            .on_address("2001:db8:0:1::1".parse().unwrap())
            .is_none());
        assert_eq!(ban.refusal("your address"), "your address is banned: spam");
        assert!(bans.lift(ban.id));
        assert!(!bans.lift(ban.id));
        assert!(bans
            .on_address("2001:db8::ffff:7".parse().unwrap())
            .is_none());
        let json = bans.json();
        assert!(json.contains("\"address\":\"192.0.2.0/24\""), "{json}");
        assert!(net("not an address").is_err());
        assert!(net("10.0.0.0/33").is_err());
    }

    #[test]
    fn login_bans_end_by_themselves_and_durations_are_bounded() {
        let bans = Bans::default();
        let ban = bans
            .add(
                Target::Login("bob".into()),
                "Bob",
                Duration::from_secs(1),
                None,
                by(),
            )
            .unwrap();
        assert_eq!(bans.on_login("bob").map(|b| b.id), Some(ban.id));
        assert!(bans.on_login("alice").is_none());
        let zero = bans.add(Target::Login("x".into()), "x", Duration::ZERO, None, by());
        assert_eq!(zero.unwrap_err(), BanError::Duration);
        let long = bans.add(Target::Login("x".into()), "x", MAX_BAN * 2, None, by());
        assert_eq!(long.unwrap_err(), BanError::Duration);
        let later = Instant::now() + Duration::from_secs(2);
        let hit = |t: &Target| matches!(t, Target::Login(l) if l == "bob");
        assert!(bans.find_at(hit, later).is_none());
    }
}
