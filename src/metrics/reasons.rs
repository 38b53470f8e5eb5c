//! The reasons the metrics are labelled with: why a connection was refused, why a
//! delivery was dropped, which bound a slow consumer passed.

use super::LabelSet;

/// Why a connection was refused or closed before it could chat.
///
/// There is no "cap" reason: connections beyond `max_connections` are not refused but
/// held (they wait in the kernel's listen backlog until a token is free); those pauses
/// are counted by `accept_paused_at_cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerIp,
    /// At `max_connections` with `at_capacity = "refuse"`.
    ServerFull,
    LoginTaken,
    InvalidLogin,
    LoginTimeout,
    /// A cluster node could not reach Redis to claim the login.
    ClusterUnavailable,
    /// The address or the login is banned by an operator.
    Banned,
    /// The address connected more often than `connects_per_address` allows.
    Throttled,
}

/// Why a delivery (one message to one recipient) was not written to its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The recipient's connection ended before the line was written.
    RecipientGone,
    /// The recipient was disconnected for not reading.
    SlowConsumer,
    /// The drain deadline passed with the line still queued.
    DrainDeadline,
}

/// Which bound a slow consumer passed (ARCHITECTURE §4b); the `reason` label of
/// `achat_slow_consumers_total` and of the disconnect's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlowReason {
    /// Its queue stayed above `outbound_queue_bytes` longer than `slow_consumer_grace`.
    Grace = 1,
    /// Its queue passed `outbound_queue_hard_bytes`.
    Hard = 2,
    /// A write to its socket blocked past `write_timeout`.
    WriteTimeout = 3,
    /// All queues together passed `outbound_total_bytes`, and it held the most.
    Total = 4,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::RecipientGone => "recipient_gone",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::DrainDeadline => "drain_deadline",
        }
    }
}

impl LabelSet for DropReason {
    const ALL: &'static [DropReason] = &[
        DropReason::RecipientGone,
        DropReason::SlowConsumer,
        DropReason::DrainDeadline,
    ];
    fn label(self) -> &'static str {
        DropReason::label(self)
    }
    fn index(self) -> usize {
        self as usize
    }
}

impl LabelSet for SlowReason {
    const ALL: &'static [SlowReason] = &[
        SlowReason::Grace,
        SlowReason::Hard,
        SlowReason::WriteTimeout,
        SlowReason::Total,
    ];
    fn label(self) -> &'static str {
        SlowReason::label(self)
    }
    /// Its position in `ALL` (the discriminants start at 1: 0 means "not cut" where one
    /// is stored in an atomic).
    fn index(self) -> usize {
        self as usize - 1
    }
}

impl SlowReason {
    pub fn from_u8(v: u8) -> Option<SlowReason> {
        Some(match v {
            1 => SlowReason::Grace,
            2 => SlowReason::Hard,
            3 => SlowReason::WriteTimeout,
            4 => SlowReason::Total,
            _ => return None,
        })
    }

    /// The close line's `reason` for a connection cut off for this.
    pub fn close_reason(self) -> super::CloseReason {
        use super::CloseReason as C;
        match self {
            SlowReason::Grace => C::SlowConsumerGrace,
            SlowReason::Hard => C::SlowConsumerHardLimit,
            SlowReason::WriteTimeout => C::SlowConsumerWriteTimeout,
            SlowReason::Total => C::SlowConsumerTotalLimit,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SlowReason::Grace => "grace",
            SlowReason::Hard => "hard_limit",
            SlowReason::WriteTimeout => "write_timeout",
            SlowReason::Total => "total_limit",
        }
    }

    /// What the disconnect's log line says, naming the setting that decided it.
    pub fn explain(self) -> &'static str {
        match self {
            SlowReason::Grace => {
                "slow consumer disconnected: outbound queue stayed over outbound_queue_bytes longer than slow_consumer_grace"
            }
            SlowReason::Hard => {
                "slow consumer disconnected: outbound queue passed outbound_queue_hard_bytes"
            }
            SlowReason::WriteTimeout => {
                "slow consumer disconnected: a write blocked past write_timeout"
            }
            SlowReason::Total => {
                "slow consumer disconnected: all queues together passed outbound_total_bytes, and this one held the most"
            }
        }
    }
}
