//! The record work of a server TLS session, without I/O: ciphertext in, plaintext and
//! records to send out, on rustls's unbuffered API ([`advance`], [`encrypt`],
//! [`close_notify`]). The socket side is in `tls_stream.rs`.
//!
//! rustls's unbuffered connection keeps no buffers of its own: the caller hands it the
//! ciphertext received, and it says how much of it it used up. What it decrypts and what
//! it wants sent land here in [`Pending`] buffers, which hold no memory while empty.

use futures_rustls::rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use futures_rustls::rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use futures_rustls::rustls::Error;

/// What to do once rustls lets application data go: seal some, or say goodbye.
pub(super) type OnTraffic<'a> = &'a mut dyn FnMut(&mut WriteTraffic<'_, ServerConnectionData>);

/// Bytes waiting to be taken, from `at`: plaintext for the reader, or records for the
/// socket. Its memory is given back as soon as the last byte is taken, so an idle
/// connection keeps none.
#[derive(Default)]
pub(super) struct Pending {
    /// The bytes; those before `at` were taken already.
    bytes: Vec<u8>,
    /// How many bytes were taken: moving a cursor instead of the bytes makes taking a
    /// little at a time cost nothing per call.
    at: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// What waits to be taken.
    pub fn waiting(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    /// Marks `n` bytes as taken; frees the buffer once nothing waits.
    pub fn take(&mut self, n: usize) {
        self.at += n;
        if self.at >= self.bytes.len() {
            *self = Pending::default();
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Appends what `fill` writes into room of at least `room` bytes; when `fill` says it
    /// needs more (`Err(Some(n))`), gives it `n` and asks again.
    fn fill_with<E>(
        &mut self,
        room: usize,
        mut fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
        too_small: impl Fn() -> E,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        let mut room = room;
        for _ in 0..2 {
            self.bytes.resize(start + room, 0);
            match fill(&mut self.bytes[start..]) {
                Ok(n) => {
                    self.bytes.truncate(start + n);
                    return Ok(());
                }
                Err(Some(needed)) if needed > room => room = needed,
                Err(_) => break,
            }
        }
        self.bytes.truncate(start);
        Err(too_small())
    }
}

/// How far the session has got, as the last call to rustls left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The handshake needs more from the client.
    Handshaking,
    /// The handshake is done: application data goes both ways.
    Traffic,
    /// Both sides sent their close_notify: nothing more goes either way.
    Closed,
}

/// What [`advance`] did with a batch of ciphertext.
pub(super) struct Advanced {
    /// Where the session got to, or why it failed (the alert rustls sends about it is
    /// in the records to send by then).
    pub stage: Result<Stage, Error>,
    /// How many bytes at the front of the ciphertext were used up; the rest is an
    /// incomplete record (or handshake message) that must be handed in again, in front
    /// of what arrives next.
    pub used: usize,
    /// The client's close_notify arrived: no more plaintext comes after `plain`.
    pub peer_closed: bool,
}

/// Runs rustls over `incoming` (the ciphertext received, after what earlier calls left):
/// the plaintext of whole application-data records goes to `plain`, and the records
/// rustls wants sent (handshake messages, alerts, session tickets) go to `outgoing`.
/// Once application data may go, `on_traffic` (if any) is called with the means to send
/// it, after everything rustls queued is in `outgoing`.
pub(super) fn advance(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    plain: &mut Pending,
    outgoing: &mut Pending,
    mut on_traffic: Option<OnTraffic<'_>>,
) -> Advanced {
    let mut used = 0;
    let mut peer_closed = false;
    let stage = loop {
        let UnbufferedStatus { mut discard, state } =
            conn.process_tls_records(&mut incoming[used..]);
        let next = match state {
            Err(e) => Some(Err(e)),
            Ok(ConnectionState::ReadTraffic(mut records)) => loop {
                match records.next_record() {
                    Some(Ok(record)) => {
                        plain.push(record.payload);
                        discard += record.discard;
                    }
                    Some(Err(e)) => break Some(Err(e)),
                    None => break None,
                }
            },
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                let encoded = outgoing.fill_with(
                    1024,
                    |room| {
                        encode.encode(room).map_err(|e| match e {
                            EncodeError::InsufficientSize(s) => Some(s.required_size),
                            EncodeError::AlreadyEncoded => None,
                        })
                    },
                    || Error::General("a handshake record could not be encoded".into()),
                );
                encoded.err().map(Err)
            }
            // What was encoded is in `outgoing`, which goes out in order before anything
            // sealed later.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                None
            }
            Ok(ConnectionState::PeerClosed) => {
                peer_closed = true;
                None
            }
            Ok(ConnectionState::Closed) => Some(Ok(Stage::Closed)),
            Ok(ConnectionState::BlockedHandshake) => Some(Ok(Stage::Handshaking)),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                if let Some(on_traffic) = on_traffic.as_mut() {
                    on_traffic(&mut traffic);
                }
                Some(Ok(Stage::Traffic))
            }
            // a-chat's server configuration accepts no 0-RTT data.
            Ok(ConnectionState::ReadEarlyData(_)) => Some(Err(Error::General(
                "early data, which a-chat does not accept".into(),
            ))),
            Ok(_) => Some(Err(Error::General("an unknown TLS state".into()))),
        };
        used += discard;
        if let Some(stage) = next {
            break stage;
        }
    };
    if stage.is_err() {
        encode_alerts(conn, &mut incoming[used..], outgoing);
    }
    Advanced {
        stage,
        used,
        peer_closed,
    }
}

/// After an error, puts the alert rustls queued about it in `outgoing`, so that the
/// client learns why (a bad certificate, a protocol error) before the connection ends.
/// `incoming` is what is left of the ciphertext: rustls may still point into it.
///
/// One call only: rustls hands out what it queued before it looks at the ciphertext
/// again, and looking again at what failed would fail (and alert) a second time.
fn encode_alerts(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    outgoing: &mut Pending,
) {
    let status = conn.process_tls_records(incoming);
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
        let _ = outgoing.fill_with(64, |room| encode.encode(room).map_err(|_| None), || ());
    }
}

/// Room for the records that carry `len` bytes of plaintext: each record adds its
/// header, the AEAD tag and TLS 1.3's content type (29 bytes at most with rustls's
/// suites); the margin covers the rest.
pub(super) fn sealed_len(len: usize) -> usize {
    len + (len / (16 * 1024) + 1) * 64
}

/// Encrypts `plaintext` into records at the front of `out`: how many bytes they took, or
/// how many they need when `out` is too small (rustls may put a key update the client
/// asked for in front of them).
pub(super) fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    plaintext: &[u8],
    out: &mut [u8],
) -> Result<usize, Result<usize, Error>> {
    traffic.encrypt(plaintext, out).map_err(|e| match e {
        EncryptError::InsufficientSize(s) => Ok(s.required_size),
        _ => Err(Error::EncryptError),
    })
}

/// Encrypts the close_notify alert into `out`: how many bytes it took (none if it did
/// not fit, which 64 bytes always do).
pub(super) fn close_notify(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    out: &mut [u8; 64],
) -> usize {
    traffic.queue_close_notify(out).unwrap_or(0)
}
