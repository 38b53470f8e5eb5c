//! The interactive client: lines typed on stdin go to the server, lines from the server
//! go to stdout, both at once. When stdin ends, the client stops sending and prints what
//! the server still has for it; when the server closes, the client exits.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use futures::io::BufReader;
use futures::{select, AsyncBufReadExt, AsyncWriteExt, StreamExt};

use crate::runtime;

/// Runs the client until the server closes the connection.
pub fn run(addr: SocketAddr) -> std::io::Result<()> {
    runtime::block_on(async move {
        let stream = runtime::connect(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
        if std::io::stdin().is_terminal() {
            eprintln!(
                "Connected to {addr}.\n\
                 Type your login name first (one word), then messages as `name1, name2: text`;\n\
                 `yourname: hello` echoes back to you. Ctrl-D quits."
            );
        }
        let mut writer = stream.clone();
        let mut from_server = BufReader::new(stream.clone()).lines().fuse();
        let mut from_stdin = BufReader::new(async_std::io::stdin()).lines().fuse();
        let mut stdin_open = true;
        loop {
            select! {
                line = from_server.next() => match line {
                    Some(line) => println!("{}", line?),
                    None => break,
                },
                line = from_stdin.next() => match line {
                    Some(line) => {
                        let mut line = line?;
                        line.push('\n');
                        writer.write_all(line.as_bytes()).await?;
                    }
                    None if stdin_open => {
                        // Nothing more to send: tell the server, then print what it still sends.
                        stdin_open = false;
                        stream.shutdown(std::net::Shutdown::Write)?;
                    }
                    None => {}
                },
            }
        }
        Ok(())
    })
}

/// Connects to `addr` and closes again: exit status 0 if the daemon accepts connections.
pub fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    runtime::block_on(async move {
        matches!(
            runtime::timeout(timeout, runtime::connect(addr)).await,
            Ok(Ok(_))
        )
    })
}
