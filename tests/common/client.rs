//! A chat client for the tests: a blocking socket whose every read has a timeout, and
//! connections from a chosen source address or with a small receive buffer.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::WAIT;

/// A chat client over a blocking socket; every read has a timeout.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        Client::from_stream(stream)
    }

    /// Connects with the socket's receive buffer set to `bytes` before the handshake, so
    /// that a client which does not read leaves the daemon's writes blocked after little
    /// data (loopback receive buffers otherwise grow to tens of MB).
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: i32) -> Client {
        Client::from_stream(connect_with_rcvbuf(addr, bytes).expect("connect"))
    }

    /// Wraps a connected socket, with the harness's timeouts.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    /// Sends one line (a `\n` is added).
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.write_all(&bytes).expect("send");
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next line without its `\n`; `None` at end of stream. Panics after WAIT.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                }
                Some(line)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// Asserts that the next line is `expected`.
    pub fn expect(&mut self, expected: &str) {
        let got = self.line();
        assert_eq!(got.as_deref(), Some(expected));
    }

    /// Asserts that the server closes the connection next (end of stream or reset).
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected the end, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e}"),
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Splits the client into its writing half and its (buffered) reading half, for tests
    /// that read on another thread while they send.
    pub fn split(self) -> (TcpStream, BufReader<TcpStream>) {
        (self.stream, self.reader)
    }

    /// The next line if one arrives within `t` (`Some(None)` at end of stream), `None` if
    /// nothing arrives in that time: a bounded negative check. The read timeout is
    /// restored to WAIT afterwards.
    pub fn line_within(&mut self, t: Duration) -> Option<Option<String>> {
        self.set_read_timeout(t);
        let mut line = String::new();
        let got = match self.reader.read_line(&mut line) {
            Ok(0) => Some(None),
            Ok(_) => {
                if line.ends_with('\n') {
                    line.pop();
                }
                Some(Some(line))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(None),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                assert!(line.is_empty(), "a partial line arrived: {line:?}");
                None
            }
            Err(e) => panic!("reading a line: {e}"),
        };
        self.set_read_timeout(WAIT);
        got
    }

    /// Reads everything until the server closes (end of stream or reset), up to WAIT.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("expected the connection to close: {e}"),
            }
        }
    }
}

/// Connects a blocking socket whose SO_RCVBUF is set before `connect`, so the window the
/// client advertises stays small.
pub fn connect_with_rcvbuf(addr: SocketAddr, bytes: i32) -> std::io::Result<TcpStream> {
    connect_v4(addr, Some(bytes), None)
}

/// Connects from the loopback address `source` (e.g. 127.0.0.2), so the daemon sees
/// another client address than 127.0.0.1.
pub fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    connect_v4(addr, None, Some(source))
}

/// A blocking IPv4 connect, with SO_RCVBUF set and the source address bound first when
/// asked.
fn connect_v4(
    addr: SocketAddr,
    rcvbuf: Option<i32>,
    source: Option<std::net::Ipv4Addr>,
) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("connect_v4 supports IPv4 only, got {addr}")
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns; the descriptor is
    // handed to a TcpStream (which closes it) right after it is created.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        if let Some(size) = rcvbuf {
            let r = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some(ip) = source {
            let from = sockaddr(ip, 0);
            let r = libc::bind(
                fd,
                &from as *const libc::sockaddr_in as *const libc::sockaddr,
                len,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let to = sockaddr(*v4.ip(), v4.port());
        let r = libc::connect(
            fd,
            &to as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}
