//! Closed sets of label values. Each set is an enum: the compiler rejects a value that is
//! not in it, each value's counter is made at start (so every series is exported from
//! the first scrape, at 0), and a value finds its counter by its own index, never by a
//! search or a string. The modules that decide these outcomes (tls, proxy, auth) use
//! them under their own names (`tls::Failure`...); the metrics import none of them back.

use std::marker::PhantomData;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Labels;

/// A closed set of label values, in `ALL`'s order.
pub trait LabelSet: Copy + 'static {
    /// Every value, in the order of their indices.
    const ALL: &'static [Self];
    /// The label value.
    fn label(self) -> &'static str;
    /// The value's position in `ALL`.
    fn index(self) -> usize;
}

/// Defines a label set: the enum, its labels, and its inherent `ALL` and `label()`.
macro_rules! label_set {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of their indices.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl LabelSet for $name {
            const ALL: &'static [$name] = $name::ALL;
            fn label(self) -> &'static str {
                $name::label(self)
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

pub(super) use label_set;

/// One counter per value of a label set, all in one family under one label key.
#[derive(Debug)]
pub struct Counters<L> {
    /// Indexed by [`LabelSet::index`].
    counters: Vec<Counter>,
    _set: PhantomData<L>,
}

impl<L: LabelSet> Counters<L> {
    /// Makes (and so exports) the counter of every value of `L` in `family`, under `key`.
    pub fn new(family: &Family<Labels, Counter>, key: &'static str) -> Counters<L> {
        let counters = L::ALL
            .iter()
            .map(|value| family.get_or_create_owned(&vec![(key, value.label())]))
            .collect();
        Counters {
            counters,
            _set: PhantomData,
        }
    }

    pub fn inc(&self, value: L) {
        self.counters[value.index()].inc();
    }

    pub fn inc_by(&self, value: L, n: u64) {
        self.counters[value.index()].inc_by(n);
    }

    pub fn get(&self, value: L) -> u64 {
        self.counters[value.index()].get()
    }
}

label_set! {
    /// Why a TLS handshake failed: the `reason` label of `achat_tls_handshake_failures_total`.
    pub enum TlsFailure {
        /// Not TLS at all: plaintext or garbage on a TLS port.
        NotTls => "not_tls",
        /// The client's certificate was missing or not signed by `client_ca`.
        ClientCertificate => "client_certificate",
        /// TLS, but the two sides could not agree (versions, ciphers, a bad record...).
        Protocol => "protocol",
        /// The client closed or reset the connection mid-handshake.
        Closed => "closed",
        /// The handshake did not finish within `login_timeout`.
        Timeout => "timeout",
        /// A ClientHello longer than a-chat takes (see `server::handshakes`).
        TooLarge => "too_large",
    }
}

label_set! {
    /// Why a connection that owed a PROXY header was closed: the `reason` label of
    /// `achat_proxy_headers_refused_total`.
    pub enum ProxyRefusal {
        Missing => "missing",
        TooLong => "too_long",
        Malformed => "malformed",
        Unsupported => "unsupported",
        /// No whole header within `login_timeout`.
        Timeout => "timeout",
    }
}

label_set! {
    /// Why a login was refused before the router saw it: the `reason` label of
    /// `achat_auth_failures_total`.
    pub enum AuthFailure {
        /// Unknown name, wrong password, or a line without a password: one answer for all.
        BadCredentials => "bad_credentials",
        /// Too many failures from the address within a minute: refused without a check.
        RateLimited => "rate_limited",
        /// The queue of logins waiting for a hash check was full: refused without a
        /// check, and not counted against the address.
        Busy => "busy",
    }
}

label_set! {
    /// Why a connection ended: its close line's `reason`. The first part of a-chat that
    /// decides it records it (`ConnInfo::ending`); a connection nobody decided for ends as
    /// `Closed`.
    pub enum CloseReason {
        /// Nobody recorded a reason.
        Closed => "closed",
        /// The client closed its side.
        ClientClosed => "client_closed",
        /// The connection was reset or a read failed.
        Reset => "reset",
        /// The peer stopped answering (TCP keepalive or `TCP_USER_TIMEOUT`).
        PeerVanished => "peer_vanished",
        LoginTaken => "login_taken",
        InvalidLogin => "invalid_login",
        LoginTimeout => "login_timeout",
        BadCredentials => "bad_credentials",
        RateLimited => "rate_limited",
        /// The queue of logins waiting for a hash check was full.
        Busy => "busy",
        IdleTimeout => "idle_timeout",
        LineTooLong => "line_too_long",
        InvalidUtf8 => "invalid_utf8",
        TooManyBadLines => "too_many_bad_lines",
        SlowConsumerGrace => "slow_consumer_grace",
        SlowConsumerHardLimit => "slow_consumer_hard_limit",
        SlowConsumerWriteTimeout => "slow_consumer_write_timeout",
        SlowConsumerTotalLimit => "slow_consumer_total_limit",
        /// A reload removed the user, or changed the password it logged in with.
        AccountRemoved => "account_removed",
        /// The same user logged in again with the password (a takeover).
        Replaced => "replaced",
        ClusterUnavailable => "cluster_unavailable",
        /// A cluster node lost the login to another node.
        LoginLost => "login_lost",
        /// The drain closed it.
        Drain => "drain",
        /// An operator closed it (`POST /connections/{id}/close` or by its login).
        Kicked => "kicked",
        /// Lame duck mode closed it, spread over `[shutdown] lame_duck_duration`.
        LameDuck => "lame_duck",
        /// Its address or login is banned (at accept, at login, or when the ban was set).
        Banned => "banned",
        /// Its address connected more often than `connects_per_address` allows.
        Throttled => "throttled",
        /// A WebSocket client sent what a line cannot be: a binary frame, a newline inside
        /// a frame, a frame that breaks RFC 6455 (`achat_websocket_refused_total` says which).
        BadFrame => "bad_frame",
    }
}

label_set! {
    /// Why a message line (or one recipient of it) was refused with an `error:` answer:
    /// the `reason` label of `achat_lines_rejected_total`. The connection stays open.
    pub enum LineRefusal {
        /// No `:` in the line.
        NoColon => "no_colon",
        /// Nothing but commas and spaces before the `:`.
        NoRecipients => "no_recipients",
        /// More names than `max_recipients`.
        TooManyRecipients => "too_many_recipients",
        /// A control character in the text.
        ControlCharacter => "control_character",
        /// One recipient is not logged in (here, or on any node of a cluster).
        UnknownRecipient => "unknown_recipient",
    }
}

impl From<AuthFailure> for CloseReason {
    fn from(why: AuthFailure) -> CloseReason {
        match why {
            AuthFailure::BadCredentials => CloseReason::BadCredentials,
            AuthFailure::RateLimited => CloseReason::RateLimited,
            AuthFailure::Busy => CloseReason::Busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_finds_its_own_counter() {
        let family = Family::<Labels, Counter>::default();
        let counters = Counters::<TlsFailure>::new(&family, "reason");
        for (i, &value) in TlsFailure::ALL.iter().enumerate() {
            assert_eq!(value.index(), i);
            for _ in 0..=i {
                counters.inc(value);
            }
        }
        for (i, &value) in TlsFailure::ALL.iter().enumerate() {
            assert_eq!(counters.get(value), i as u64 + 1, "{}", value.label());
            let child = family.get_or_create_owned(&vec![("reason", value.label())]);
            assert_eq!(child.get(), i as u64 + 1);
        }
    }
}
