use super::*;
use async_tungstenite::tungstenite::protocol::Role;

/// An in-memory stream: reads what the test put in, keeps what the session wrote.
struct Mock {
    input: Vec<u8>,
    at: usize,
    output: Vec<u8>,
}

impl AsyncRead for Mock {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let rest = &me.input[me.at..];
        if rest.is_empty() {
            return Poll::Pending;
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        me.at += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn session(input: Vec<u8>) -> Session<Mock> {
    let mock = Mock {
        input,
        at: 0,
        output: Vec::new(),
    };
    let ws = futures::executor::block_on(WebSocketStream::from_raw_socket(
        mock,
        Role::Server,
        Some(config(64)),
    ));
    Session::new(ws)
}

fn cx() -> Context<'static> {
    Context::from_waker(futures::task::noop_waker_ref())
}

#[test]
fn text_frames_are_read_as_lines_and_pings_are_answered() {
    let mut input = frame(0x1, b"alice");
    input.extend(frame(0x9, b"are you there"));
    input.extend(frame(0x1, b"bob: hi"));
    let mut s = session(input);
    let mut buf = [0u8; 64];
    let Poll::Ready(Ok(n)) = s.poll_read(&mut cx(), &mut buf) else {
        panic!("nothing read")
    };
    assert_eq!(&buf[..n], b"alice\nbob: hi\n");
    // The pong went out: an unmasked frame, opcode 0xA, the ping's payload.
    let out = &s.carrier().output;
    assert_eq!(&out[..2], &[0x8a, 13]);
    assert_eq!(&out[2..15], b"are you there");
}

#[test]
fn a_line_longer_than_the_buffer_is_read_in_parts() {
    let mut s = session(frame(0x1, b"bob: a line longer than the buffer"));
    let (mut got, mut buf) = (Vec::new(), [0u8; 8]);
    while let Poll::Ready(Ok(n)) = s.poll_read(&mut cx(), &mut buf) {
        got.extend_from_slice(&buf[..n]);
        if got.ends_with(b"\n") {
            break;
        }
    }
    assert_eq!(got, b"bob: a line longer than the buffer\n");
}

#[test]
fn each_line_written_leaves_as_a_text_frame() {
    let mut s = session(Vec::new());
    let lines = b"from a: one\nfrom b: two\n";
    let Poll::Ready(Ok(n)) = s.poll_write(&mut cx(), lines) else {
        panic!("not taken")
    };
    assert_eq!(n, lines.len());
    assert!(s.poll_flush(&mut cx()).is_ready());
    let out = &s.carrier().output;
    assert_eq!(
        out,
        &[&[0x81, 11][..], b"from a: one", &[0x81, 11], b"from b: two"].concat()
    );
}

#[test]
fn what_a_line_cannot_be_is_refused_with_a_close_frame_that_says_why() {
    let cases: [(Vec<u8>, WsRefusal, u16); 3] = [
        (frame(0x2, b"\x00\x01"), WsRefusal::Binary, 1003),
        (frame(0x1, b"a\nb"), WsRefusal::Newline, 1007),
        (frame(0x1, &[b'x'; 100]), WsRefusal::TooBig, 1009),
    ];
    for (input, why, code) in cases {
        let mut s = session(input);
        let mut buf = [0u8; 256];
        let Poll::Ready(Err(e)) = s.poll_read(&mut cx(), &mut buf) else {
            panic!("{why:?} was not refused")
        };
        assert_eq!(Refused::of(&e), Some(Refused(why)));
        let out = &s.carrier().output;
        assert_eq!(out[0], 0x88, "{why:?}: a close frame");
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), code, "{why:?}");
        assert_eq!(&out[4..], Refused(why).reason().as_bytes());
    }
}

#[test]
fn reads_end_once_stopped_and_go_on_after_the_close() {
    let mut s = session(frame(0x1, b"alice"));
    s.stop_reading();
    assert!(matches!(
        s.poll_read(&mut cx(), &mut [0u8; 16]),
        Poll::Ready(Ok(0))
    ));
    s.start_close(CloseCode::Normal, "");
    let mut buf = [0u8; 16];
    assert!(matches!(
        s.poll_read(&mut cx(), &mut buf),
        Poll::Ready(Ok(6))
    ));
}
