//! How the config file writes values that are not plain TOML types: durations
//! ("500ms"), addresses ("IP:PORT", one or a list), networks for `proxy_protocol_from`.
//! Each is parsed into its Rust type with an error that shows what to write instead.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// One string or a list of strings: `"a"` or `["a", "b"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

pub(super) fn one_or_many_addrs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    one_or_many(d)?
        .iter()
        .map(|s| parse_addr(s).map_err(serde::de::Error::custom))
        .collect()
}

/// Why a value is not an `IP:PORT` address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not an address: write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"")]
pub struct NotAnAddress {
    /// The value as written.
    pub text: String,
}

/// Parses `IP:PORT`. Names are not resolved: a daemon should not depend on DNS to start.
pub fn parse_addr(s: &str) -> Result<SocketAddr, NotAnAddress> {
    s.parse().map_err(|_| NotAnAddress { text: s.to_owned() })
}

pub(super) mod duration {
    use super::*;

    /// The longest duration any key takes. Longer ones cannot work: deadlines computed from
    /// them overflow the clocks' arithmetic (`"1000000000000h"` parses, but no timer can be
    /// set that far), and none of a-chat's settings means anything beyond a year.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "\"{s}\" is not a duration ({e}): write e.g. \"500ms\", \"10s\", \"1m\""
            ))
        })?;
        if d > MAX {
            return Err(serde::de::Error::custom(format!(
                "\"{s}\" is longer than a year, the longest a duration may be (\"365d\")"
            )));
        }
        Ok(d)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

pub(super) mod sources {
    use super::*;
    use crate::proxy::Source;

    /// One address or network, or a list, as `listen` takes them.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Source>, D::Error> {
        one_or_many(d)?
            .iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }

    pub fn serialize<S: Serializer>(list: &[Source], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(Source::to_string))
    }
}

pub(super) mod optional_addr {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        parse_addr(&s).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_str(""),
        }
    }
}
