//! Plain HTTP sent to the HTTPS port (`curl http://registry:443/`, a client missing its
//! `https://`). rustls would answer with a TLS alert, which clients show as garbage ("Received
//! HTTP/0.9 when not allowed"); like Go's servers (and so distribution), the client gets a
//! readable 400 instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The answer, word for word what Go's `net/http` sends.
pub const ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
      Client sent an HTTP request to an HTTPS server.\n";
/// How much of the client's request is read (and thrown away) after the answer, and for how
/// long: closing with unread bytes would reset the connection and could lose the answer.
const LINGER_BYTES: usize = 64 << 10;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Whether the first byte a client sent starts an HTTP request rather than a TLS handshake (a
/// TLS record starts with 0x16, a request with an upper-case method name).
pub fn looks_like_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Answers a plain-HTTP client with 400 and closes the connection.
pub async fn refuse(mut tcp: TcpStream) {
    if tcp.write_all(ANSWER).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 8 << 10];
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while read < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
