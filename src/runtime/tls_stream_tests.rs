//! The TLS layer against rustls's own buffered client, over a loopback socket: records
//! cut anywhere, writes larger than a record and than the socket takes, goodbyes, and
//! what an idle session keeps.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use super::{accept, TlsServerStream};
use crate::runtime::sock::Sock;

/// A certificate for `localhost` and the CA that signed it (made with the `openssl`
/// command), as the server's and the client's configurations.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str], key: &str, out: &str| {
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(args)
            .arg("-keyout")
            .arg(path(key))
            .arg("-out")
            .arg(path(out))
            .output()
            .expect("the openssl command");
        assert!(made.status.success(), "{made:?}");
    };
    openssl(&["-subj", "/CN=a-chat test CA"], "ca.key", "ca.pem");
    let (ca, ca_key) = (path("ca.pem"), path("ca.key"));
    let signed = [
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
    ];
    openssl(&signed, "key.pem", "cert.pem");
    let (cert, key) = (path("cert.pem"), path("key.pem"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(path("ca.pem")).unwrap())
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A connected pair: the client's socket and the server's, as the daemon holds it.
fn pair() -> (TcpStream, Sock) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.set_nodelay(true).unwrap();
    let (server, _) = listener.accept().unwrap();
    let server = async_io::Async::new(server).unwrap();
    (client, Sock(Arc::new(server)))
}

/// Runs the client's side of a handshake by hand, so that the test decides how its
/// records are cut; returns the session and its socket.
fn client_handshake(
    config: Arc<ClientConfig>,
    mut sock: TcpStream,
) -> (ClientConnection, TcpStream) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        if conn.is_handshaking() && conn.wants_read() {
            conn.read_tls(&mut sock).unwrap();
            conn.process_new_packets().unwrap();
        }
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    (conn, sock)
}

/// Reads plaintext until `want` bytes came, or the stream's clean end.
fn client_read(conn: &mut ClientConnection, sock: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while got.len() < want {
        match conn.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        if conn.read_tls(sock).unwrap() == 0 {
            conn.process_new_packets().unwrap();
            break;
        }
        conn.process_new_packets().unwrap();
    }
    got
}

fn idle(stream: &TlsServerStream) -> bool {
    stream.incoming.capacity() == 0
        && stream.filled == 0
        && stream.plain.is_empty()
        && stream.outgoing.is_empty()
}

#[test]
fn records_cut_anywhere_arrive_whole_and_an_idle_session_keeps_no_buffer() {
    let (server_config, client_config) = configs();
    let (client_sock, sock) = pair();
    // Many small records, then one of the largest size, sent a few bytes per write.
    let lines: Vec<String> = (0..200).map(|i| format!("line {i}\n")).collect();
    let big = "x".repeat(20_000) + "\n";
    let total: usize = lines.iter().map(String::len).sum::<usize>() + big.len();
    let client = thread::spawn(move || {
        let (mut conn, mut sock) = client_handshake(client_config, client_sock);
        let mut ciphertext = Vec::new();
        for line in &lines {
            conn.writer().write_all(line.as_bytes()).unwrap();
            conn.write_tls(&mut ciphertext).unwrap();
        }
        conn.writer().write_all(big.as_bytes()).unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut ciphertext).unwrap();
        }
        for (i, piece) in ciphertext.chunks(7).enumerate() {
            sock.write_all(piece).unwrap();
            if i % 64 == 0 {
                thread::yield_now();
            }
        }
        // The server echoes everything back in one write: several records.
        let echoed = client_read(&mut conn, &mut sock, total);
        assert_eq!(echoed.len(), total);
        // Then says goodbye with close_notify: a clean end, not a truncation.
        assert!(client_read(&mut conn, &mut sock, 1).is_empty());
        let mut rest = [0u8; 1];
        assert_eq!(
            conn.reader().read(&mut rest).unwrap(),
            0,
            "a clean close_notify"
        );
        echoed
    });
    let (received, was_idle) = crate::runtime::block_on(async move {
        let mut stream = accept(sock, server_config).await.expect("handshake");
        let mut received = Vec::new();
        let mut buf = [0u8; 1000];
        while received.len() < total {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "ended after {} bytes", received.len());
            received.extend_from_slice(&buf[..n]);
        }
        let was_idle = idle(&stream);
        stream.write_all(&received).await.unwrap();
        stream.flush().await.unwrap();
        stream.close().await.unwrap();
        (received, was_idle)
    });
    let echoed = client.join().unwrap();
    let mut sent: Vec<u8> = (0..200)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    sent.extend_from_slice(("x".repeat(20_000) + "\n").as_bytes());
    assert_eq!(received, sent);
    assert_eq!(echoed, sent);
    assert!(was_idle, "an idle session kept a buffer");
}

#[test]
fn plaintext_on_a_tls_socket_fails_the_handshake_with_rustls_saying_why() {
    let (server_config, _) = configs();
    let (mut client_sock, sock) = pair();
    client_sock.write_all(b"alice\nbob: hi\n").unwrap();
    let failed = crate::runtime::block_on(accept(sock, server_config));
    let error = failed.err().expect("a failed handshake");
    let tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(tls, Some(rustls::Error::InvalidMessage(_))),
        "{error:?}"
    );
}

#[test]
fn a_client_that_leaves_mid_handshake_is_an_end_of_stream_not_a_tls_error() {
    let (server_config, _) = configs();
    let (mut client_sock, sock) = pair();
    // The first bytes of a ClientHello's record header, then the end.
    client_sock.write_all(&[22, 3, 1]).unwrap();
    drop(client_sock);
    let error = crate::runtime::block_on(accept(sock, server_config))
        .err()
        .expect("a failed handshake");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error:?}");
    let tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(tls.is_none(), "{error:?}");
}

#[test]
fn a_record_that_does_not_open_ends_the_session_with_an_alert_and_rustls_saying_why() {
    let (server_config, client_config) = configs();
    let (client_sock, sock) = pair();
    let client = thread::spawn(move || {
        let (mut conn, mut sock) = client_handshake(client_config, client_sock);
        // Once the server has finished its handshake (it says so), an application-data
        // record header and 100 bytes of noise for its ciphertext.
        assert_eq!(client_read(&mut conn, &mut sock, 3), b"go\n");
        let mut forged = vec![23, 3, 3, 0, 100];
        forged.extend((0..100u8).map(|b| b.wrapping_mul(31)));
        sock.write_all(&forged).unwrap();
        // The server's alert (bad_record_mac) reaches the client, then the end.
        loop {
            match conn.read_tls(&mut sock) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(format!("read: {e}")),
            }
            if let Err(e) = conn.process_new_packets() {
                return Some(e.to_string());
            }
        }
    });
    let error = crate::runtime::block_on(async move {
        let mut stream = accept(sock, server_config).await.expect("handshake");
        stream.write_all(b"go\n").await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = [0u8; 100];
        let error = stream.read(&mut buf).await.expect_err("a forged record");
        // Nothing more is read or sealed once a record failed.
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        assert!(stream.write(b"more\n").await.is_err());
        drop(stream);
        error
    });
    let tls = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(tls, Some(rustls::Error::DecryptError)),
        "{error:?}"
    );
    let seen = client.join().unwrap().expect("an alert");
    assert!(seen.contains("BadRecordMac"), "{seen}");
}

#[test]
fn a_write_larger_than_the_socket_takes_waits_for_room_and_arrives_whole() {
    // 16 MiB: more than loopback's socket buffers hold, so the writer waits for room
    // (in the socket's writing slot) many times over while the client reads.
    const TOTAL: usize = 16 << 20;
    let (server_config, client_config) = configs();
    let (client_sock, sock) = pair();
    let client = thread::spawn(move || {
        let (mut conn, mut sock) = client_handshake(client_config, client_sock);
        let got = client_read(&mut conn, &mut sock, TOTAL);
        let pattern_holds = got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8);
        (got.len(), pattern_holds)
    });
    crate::runtime::block_on(async move {
        let mut stream = accept(sock, server_config).await.expect("handshake");
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(100_000) {
            stream.write_all(piece).await.unwrap();
        }
        stream.flush().await.unwrap();
        assert!(
            stream.outgoing.is_empty(),
            "records left behind after a flush"
        );
    });
    assert_eq!(client.join().unwrap(), (TOTAL, true));
}

#[test]
fn a_key_update_from_the_client_is_followed_both_ways() {
    let (server_config, client_config) = configs();
    let (client_sock, sock) = pair();
    let client = thread::spawn(move || {
        let (mut conn, mut sock) = client_handshake(client_config, client_sock);
        let mut ciphertext = Vec::new();
        // Each line under new keys: the client asks for an update (and for the server's
        // own) before it, so the server must open it with the keys the update made.
        for i in 0..3 {
            conn.refresh_traffic_keys().unwrap();
            seal_line(&mut conn, &format!("line {i}\n"), &mut ciphertext);
        }
        sock.write_all(&ciphertext).unwrap();
        // The server answers under its own new keys, its key update in front.
        client_read(&mut conn, &mut sock, 21)
    });
    crate::runtime::block_on(async move {
        let mut stream = accept(sock, server_config).await.expect("handshake");
        let mut received = Vec::new();
        let mut buf = [0u8; 100];
        while received.len() < 21 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "ended after {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..n]);
        }
        assert_eq!(received, b"line 0\nline 1\nline 2\n");
        stream.write_all(&received).await.unwrap();
        stream.flush().await.unwrap();
    });
    assert_eq!(client.join().unwrap(), b"line 0\nline 1\nline 2\n");
}

/// Seals `line` on the client's side and appends its records to `out`.
fn seal_line(conn: &mut ClientConnection, line: &str, out: &mut Vec<u8>) {
    conn.writer().write_all(line.as_bytes()).unwrap();
    while conn.wants_write() {
        conn.write_tls(out).unwrap();
    }
}
