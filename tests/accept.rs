//! ARCHITECTURE §4 against the real binary: the accept loop under descriptor exhaustion, the
//! connection cap, bursts of resets, and TCP_NODELAY on accepted sockets.
mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use common::{Daemon, Start, WAIT};

/// Starts `n` connections at once, as a load generator does: non-blocking connects, so a
/// full listen backlog leaves the rest retrying their handshake instead of blocking us.
/// Returns the sockets (kept open by the caller) and how many completed the handshake
/// within a moment.
fn open_many(addr: SocketAddr, n: usize) -> (Vec<OwnedFd>, usize) {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: plain socket calls; the descriptor is owned by the OwnedFd.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let r = libc::connect(
                fd.as_raw_fd(),
                &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            assert!(
                r == 0 || err.raw_os_error() == Some(libc::EINPROGRESS),
                "connect: {err}"
            );
            socks.push(fd);
        }
    }
    // How many are established: writable within a short wait.
    let mut polls: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    // SAFETY: poll over an array of pollfd we own.
    unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 500) };
    let established = polls
        .iter()
        .filter(|p| p.revents & libc::POLLOUT != 0 && p.revents & libc::POLLERR == 0)
        .count();
    (socks, established)
}

/// Counts the log lines so far that contain `needle`.
fn count_log(d: &Daemon, needle: &str) -> usize {
    d.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// With RLIMIT_NOFILE = 100 and 300 connections held open, accept fails with EMFILE: the
/// daemon warns a few times a second, does not spin, does not exit, and serves again as
/// soon as descriptors are free.
#[test]
fn descriptor_exhaustion_neither_spins_nor_kills_the_daemon() {
    const CONNS: usize = 300;
    let mut d = Daemon::start_with(Start {
        toml: "[server]\nmax_connections = 1000\naccept_error_sleep = \"500ms\"\n".into(),
        nofile: Some(100),
        ..Start::default()
    });
    let (held, established) = open_many(d.addr, CONNS);
    eprintln!("{CONNS} connects started, {established} established at once");
    d.wait_log(|l| l.contains("accept failed"))
        .expect("no accept warning although the daemon ran out of descriptors");
    let hint = d.log_text();
    assert!(
        hint.contains("Too many open files") || hint.contains("EMFILE"),
        "the warning does not say why"
    );

    // A window of waiting, measured: CPU time and warnings per second.
    let (cpu0, warned0, t0) = (d.cpu_time(), count_log(&d, "accept failed"), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (cpu1, warned1, t1) = (d.cpu_time(), count_log(&d, "accept failed"), Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let warnings = warned1 - warned0;
    eprintln!(
        "over {secs:.2} s with descriptors exhausted: {cpu:.3} s CPU, {warnings} accept warnings"
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        d.log_text()
    );
    assert!(
        cpu < 0.2 * secs,
        "{cpu:.3} s CPU in {secs:.2} s: the accept loop spins"
    );
    assert!(
        (warnings as f64) <= 3.0 * secs + 1.0,
        "{warnings} accept warnings in {secs:.2} s: more than a few a second"
    );
    assert!(
        warnings >= 1,
        "no accept warning during the window: descriptors were not exhausted"
    );

    drop(held);
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    alice.send("bob: still serving");
    bob.expect("from alice: still serving");
    assert!(d.child.try_wait().unwrap().is_none());
}

/// With `max_connections = 2`, a third connection is held (not served, not refused) until
/// one of the first two ends.
#[test]
fn the_connection_cap_holds_the_next_connection_until_one_ends() {
    let d = Daemon::with_toml("[server]\nmax_connections = 2\n");
    let alice = d.login("alice");
    let mut bob = d.login("bob");
    let mut carol = d.connect();
    carol.send("carol");
    carol.send("carol: served?");
    assert_eq!(
        carol.line_within(Duration::from_millis(500)),
        None,
        "a third connection was served although max_connections = 2"
    );
    drop(alice);
    carol.expect("from carol: served?");
    carol.send("bob: hi from carol");
    bob.expect("from carol: hi from carol");
    // The cap still holds: carol and bob are the two.
    let mut dave = d.connect();
    dave.send("dave");
    dave.send("dave: served?");
    assert_eq!(dave.line_within(Duration::from_millis(500)), None);
    drop(carol);
    dave.expect("from dave: served?");
}

/// Sets SO_LINGER to 0, so that closing the socket sends a reset instead of a FIN.
fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a properly sized linger struct.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt(SO_LINGER)");
}

/// Clients that reset right after connecting (or right after their login) end their own
/// connection only: the accept loop keeps serving.
#[test]
fn a_burst_of_resets_does_not_stop_the_accept_loop() {
    const RESETS: usize = 300;
    let d = Daemon::start();
    for i in 0..RESETS {
        let s = TcpStream::connect_timeout(&d.addr, WAIT).expect("connect");
        set_linger_zero(&s);
        if i % 3 == 1 {
            let _ = (&s).write_all(format!("reset{i}\n").as_bytes());
        } else if i % 3 == 2 {
            let _ = (&s).write_all(format!("reset{i}\nreset{i}: hi\n").as_bytes());
        }
        drop(s);
    }
    let mut alice = d.login("alice");
    let mut bob = d.login("bob");
    alice.send("bob: after the resets");
    bob.expect("from alice: after the resets");
    // A login taken by a reset client is free again once its connection is gone.
    let mut again = d.connect();
    again.send("reset1");
    again.send("reset1: me");
    let deadline = Instant::now() + WAIT;
    loop {
        match again.line().as_deref() {
            Some("from reset1: me") => break,
            Some(l) if l.starts_with("error: login \"reset1\" is taken") => {
                // The reset connection's logout may not have been processed yet.
                assert!(Instant::now() < deadline, "reset1 was never released");
                std::thread::sleep(Duration::from_millis(20));
                again = d.connect();
                again.send("reset1");
                again.send("reset1: me");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Takes a copy of descriptor `fd` of process `pid` (pidfd_getfd, Linux 5.6+).
fn steal_fd(pid: u32, fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscalls; the returned descriptors are owned by us and closed on drop.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0);
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as RawFd);
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(got as RawFd))
    }
}

fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    // A copy that does not own the descriptor, just to use std's getpeername.
    // SAFETY: the ManuallyDrop keeps the TcpStream from closing `fd`, which we own.
    let s = std::mem::ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd.as_raw_fd()) });
    s.peer_addr().ok()
}

fn nodelay(fd: &OwnedFd) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int we own, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt(TCP_NODELAY)");
    v != 0
}

/// The daemon's socket for our connection has TCP_NODELAY set. Checked directly on the
/// daemon's descriptor (copied with pidfd_getfd); skipped, saying so, where the kernel
/// or the permissions do not allow that.
#[test]
fn accepted_sockets_have_tcp_nodelay() {
    let d = Daemon::start();
    let alice = d.login("alice");
    let ours = alice.stream.local_addr().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid())).unwrap();
    let mut found = None;
    for entry in fds {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let fd: RawFd = entry.file_name().to_str().unwrap().parse().unwrap();
        match steal_fd(d.pid(), fd) {
            Ok(copy) => {
                if peer_of(&copy) == Some(ours) {
                    found = Some(copy);
                    break;
                }
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot copy the daemon's descriptors here ({e})");
                return;
            }
        }
    }
    let sock = found.expect("the daemon holds no socket connected to us");
    assert!(nodelay(&sock), "TCP_NODELAY is off on the accepted socket");
}
