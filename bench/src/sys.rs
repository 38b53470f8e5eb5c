//! The few operating-system calls the bench needs beyond std: epoll, eventfd,
//! bind-before-connect, non-blocking connects, RLIMIT_NOFILE, getrusage, /proc
//! of the daemon and the kernel's TCP counters (/proc/net/netstat).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub struct Epoll {
    fd: OwnedFd,
}

pub const READABLE: u32 =
    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLERR | libc::EPOLLHUP) as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;
pub const HANGUP: u32 = (libc::EPOLLRDHUP | libc::EPOLLERR | libc::EPOLLHUP) as u32;

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned right away.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Registers `fd` edge-triggered for reading and writing.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Waits for events, at most `timeout` (nanosecond resolution).
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(3600) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` is a valid buffer of the given length.
        let r = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            if e.raw_os_error() == Some(libc::ENOSYS) {
                let ms = timeout.as_nanos().div_ceil(1_000_000).min(3_600_000) as libc::c_int;
                // SAFETY: as above.
                let r = unsafe {
                    libc::epoll_wait(
                        self.fd.as_raw_fd(),
                        events.as_mut_ptr(),
                        events.len() as libc::c_int,
                        ms,
                    )
                };
                return cvt(r).map(|n| n as usize);
            }
            return Err(e);
        }
        Ok(r as usize)
    }
}

/// An eventfd to wake a worker blocked in epoll.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned right away.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) is fine.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Connects to `addr` with TCP_NODELAY, returning a non-blocking stream. With
/// `source`, the socket is first bound to that IPv4 address (the port is picked
/// at connect time, IP_BIND_ADDRESS_NO_PORT), so many connections can spread
/// over 127.0.0.x and never exhaust one address's ephemeral ports.
pub fn connect(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let stream = match (source, addr) {
        (Some(src), SocketAddr::V4(dst)) => connect_from(src, dst.ip(), dst.port(), timeout)?,
        _ => TcpStream::connect_timeout(&addr, timeout)?,
    };
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

fn connect_from(
    src: Ipv4Addr,
    ip: &Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: each call gets valid pointers and lengths; the descriptor is owned
    // by `sock` from the start, so every error path closes it.
    unsafe {
        let fd = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        ))?;
        let sock = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        // Best effort: without it, bind picks the port, which still works.
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = sockaddr_in(src, 0);
        cvt(libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            len,
        ))?;
        let da = sockaddr_in(*ip, port);
        if libc::connect(fd, (&da as *const libc::sockaddr_in).cast(), len) < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            if cvt(libc::poll(&mut pfd, 1, ms))? == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            let mut err: libc::c_int = 0;
            let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            cvt(libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut elen,
            ))?;
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Ok(TcpStream::from(sock))
    }
}

/// RLIMIT_NOFILE as (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) })?;
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Raises the soft RLIMIT_NOFILE to `want` (at most the hard limit).
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= want {
        return Ok(soft);
    }
    let r = libc::rlimit {
        rlim_cur: want.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: valid pointer.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
    Ok(want.min(hard))
}

/// CPU time (user + system) this process has used.
pub fn self_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// VmRSS of process `pid` in KiB, from /proc/PID/status.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (utime + stime) of process `pid`, from /proc/PID/stat.
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// The soft "Max open files" of process `pid`, from /proc/PID/limits.
pub fn proc_nofile(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Starts a non-blocking connect to `addr` (TCP_NODELAY; with `source`, bound
/// to that IPv4 address first). Returns the socket and whether it is already
/// connected; otherwise the connect is in progress: wait for it to be writable
/// and ask [`take_socket_error`].
pub fn connect_start(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<(TcpStream, bool)> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: each call gets valid pointers and lengths; the descriptor is owned
    // by `sock` from the start, so every error path closes it.
    unsafe {
        let fd = cvt(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        ))?;
        let sock = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            int_len,
        );
        if let (Some(src), SocketAddr::V4(_)) = (source, addr) {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                int_len,
            );
            let sa = sockaddr_in(src, 0);
            cvt(libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))?;
        }
        let r = match addr {
            SocketAddr::V4(a) => {
                let da = sockaddr_in(*a.ip(), a.port());
                libc::connect(
                    fd,
                    (&da as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let mut da: libc::sockaddr_in6 = std::mem::zeroed();
                da.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                da.sin6_port = a.port().to_be();
                da.sin6_addr.s6_addr = a.ip().octets();
                da.sin6_scope_id = a.scope_id();
                libc::connect(
                    fd,
                    (&da as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if r == 0 {
            return Ok((TcpStream::from(sock), true));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            Ok((TcpStream::from(sock), false))
        } else {
            Err(e)
        }
    }
}

/// The pending error of a socket (SO_ERROR): how a non-blocking connect ended.
pub fn take_socket_error(s: &TcpStream) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid out-pointers of the right size.
    cvt(unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if err == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(err))
    }
}

/// The counters of /proc/net/netstat (or /proc/net/snmp), keyed like `nstat`
/// names them: the section and the field, `TcpExtListenOverflows`. Each
/// section is a line of names followed by a line of values.
pub fn parse_netstat(text: &str) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((sec, names)), Some((sec2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            break;
        };
        if sec != sec2 {
            break;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                out.insert(format!("{sec}{n}"), v);
            }
        }
    }
    out
}

/// The kernel's TCP counters now (`None` if /proc/net/netstat is unreadable).
pub fn netstat() -> Option<std::collections::HashMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let m = parse_netstat(&text);
    (!m.is_empty()).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures() {
        let pid = std::process::id();
        assert!(proc_rss_kib(pid).unwrap() > 0);
        assert!(proc_cpu(pid).is_some());
        let (soft, _) = nofile_limit().unwrap();
        assert_eq!(proc_nofile(pid), Some(soft));
        assert!(proc_rss_kib(u32::MAX).is_none());
    }

    #[test]
    fn bound_connect_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = connect(
            addr,
            Some(Ipv4Addr::new(127, 0, 0, 7)),
            Duration::from_secs(2),
        )
        .unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7)));
        assert_eq!(s.local_addr().unwrap().ip(), peer.ip());
    }

    #[test]
    fn netstat_sections_and_fields() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPSynRetrans\n\
                    TcpExt: 0 12 13 7\n\
                    IpExt: InNoRoutes InOctets\n\
                    IpExt: 0 123456789012\n";
        let m = parse_netstat(text);
        assert_eq!(m.get("TcpExtListenOverflows"), Some(&12));
        assert_eq!(m.get("TcpExtListenDrops"), Some(&13));
        assert_eq!(m.get("TcpExtTCPSynRetrans"), Some(&7));
        assert_eq!(m.get("IpExtInOctets"), Some(&123_456_789_012));
        assert_eq!(m.len(), 6);
        assert!(parse_netstat("").is_empty());
        assert!(parse_netstat("garbage\n").is_empty());
        // A names line without its values line, or mismatched sections: stop there.
        assert_eq!(parse_netstat("TcpExt: A B\nIpExt: 1 2\n").len(), 0);
        assert_eq!(parse_netstat("TcpExt: A\nTcpExt: 1\nIpExt: B\n").len(), 1);
        if let Some(live) = netstat() {
            assert!(live.contains_key("TcpExtListenOverflows"));
        }
    }

    #[test]
    fn nonblocking_connect_completes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (s, _done) =
            connect_start(l.local_addr().unwrap(), Some(Ipv4Addr::new(127, 0, 0, 3))).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 2000) };
        take_socket_error(&s).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        match connect_start(addr, None) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            Ok((s, _)) => {
                let mut pfd = libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 2000) };
                assert_eq!(
                    take_socket_error(&s).unwrap_err().kind(),
                    io::ErrorKind::ConnectionRefused
                );
            }
        }
    }
}
