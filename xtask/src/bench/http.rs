//! A small HTTP/1.1 client over one keep-alive tokio `TcpStream`, and the request/response
//! parsing the sink shares.
//!
//! Why not an HTTP client crate: the benchmark runs on the same 2 cores as the server, so the
//! load generator must cost as little as possible. Requests are built once as bytes and written
//! as they are; responses are parsed just far enough to know the status and the body (a
//! `Content-Length` body, a chunked one, or one that ends with the connection).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long one request may take before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection idle this long is replaced before the next request rather than reused: servers
/// close idle keep-alive connections (actix-web after 5 s), and a request written into a
/// connection the server is closing fails without having been read. Never retrying a request
/// keeps every count honest; not reusing stale connections keeps such failures out.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// Largest header block accepted; a bigger one is a protocol error.
const MAX_HEAD: usize = 64 * 1024;

/// A response: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy), for error messages.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds a request's bytes. `token` becomes a bearer `Authorization` header; a body is sent as
/// JSON.
pub(crate) fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.map_or(0, <[u8]>::len));
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(token) = token {
        out.extend_from_slice(b"Authorization: Bearer ");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    }
    out
}

/// The parsed head of a request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The length of the head including the blank line.
    pub(crate) len: usize,
    /// The status code (responses) or 0 (requests).
    pub(crate) status: u16,
    pub(crate) content_length: Option<usize>,
    pub(crate) chunked: bool,
    pub(crate) close: bool,
    /// The `Idempotency-Key` header, when present.
    pub(crate) idempotency_key: Option<String>,
}

/// Parses a head from the start of `buf`: `Ok(None)` while incomplete.
pub(crate) fn parse_head(buf: &[u8], response: bool) -> io::Result<Option<Head>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(bad("header block too large"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let status = if response {
        let mut parts = first.split(' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad("not an HTTP/1 status line"));
        }
        parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad("no status code"))?
    } else {
        0
    };
    let mut head = Head {
        len: end + 4,
        status,
        content_length: None,
        chunked: false,
        close: first.ends_with("HTTP/1.0"),
        idempotency_key: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("header line without a colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().map_err(|_| bad("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            head.idempotency_key = Some(value.to_owned());
        }
    }
    Ok(Some(head))
}

/// Decodes a chunked body from the start of `buf`: the body and the bytes consumed, or
/// `Ok(None)` while incomplete.
pub(crate) fn parse_chunked(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&buf[at..at + line_end]).map_err(|_| bad("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with a blank line.
            let Some(end) = find(&buf[at..], b"\r\n") else {
                return Ok(None);
            };
            return Ok(Some((body, at + end + 2)));
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// One keep-alive connection to a server; it reconnects when the server closed it.
pub(crate) struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    last_used: Instant,
}

impl Conn {
    /// A connection to `addr`, opened on first use.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            last_used: Instant::now(),
        }
    }

    /// Sends one request and reads its response, within [`REQUEST_TIMEOUT`]. On any error the
    /// connection is dropped, so the next call starts a fresh one.
    pub(crate) async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request)).await {
            Ok(Ok(response)) => {
                self.last_used = Instant::now();
                Ok(response)
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        if self.last_used.elapsed() > MAX_IDLE {
            self.stream = None;
        }
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        stream.write_all(request).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf, true)? {
                break head;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let body = if head.chunked {
            loop {
                if let Some((body, used)) = parse_chunked(&self.buf[head.len..])? {
                    self.buf.drain(..head.len + used);
                    break body;
                }
                read_more(stream, &mut self.buf).await?;
            }
        } else if let Some(length) = head.content_length {
            while self.buf.len() < head.len + length {
                read_more(stream, &mut self.buf).await?;
            }
            let body = self.buf[head.len..head.len + length].to_vec();
            self.buf.drain(..head.len + length);
            body
        } else if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            self.buf.drain(..head.len);
            Vec::new()
        } else {
            // The body ends with the connection.
            loop {
                let mut chunk = [0u8; 16 * 1024];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            let body = self.buf[head.len..].to_vec();
            self.buf.clear();
            self.stream = None;
            return Ok(Response {
                status: head.status,
                body,
            });
        };
        if head.close {
            self.stream = None;
        }
        Ok(Response {
            status: head.status,
            body,
        })
    }
}

/// Reads what is available into `buf`; a closed connection is an error here (a response was
/// still expected).
pub(crate) async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-message",
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let head = parse_head(
            b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\nConnection: close\r\n\r\nxx",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.content_length, Some(12));
        assert!(head.close);
        assert_eq!(head.len, 63);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", true).unwrap(),
            None
        );
        let request = parse_head(
            b"POST /h HTTP/1.1\r\nIdempotency-Key: r1:w\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.idempotency_key.as_deref(), Some("r1:w"));
        assert!(request.chunked);
        for bad in [
            &b"SMTP 200\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200\r\nnocolon\r\n\r\n",
        ] {
            assert!(
                parse_head(bad, true).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            parse_chunked(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\nNEXT").unwrap(),
            Some((b"hello world".to_vec(), 30))
        );
        assert_eq!(parse_chunked(b"5\r\nhel").unwrap(), None);
        assert_eq!(parse_chunked(b"5\r\nhello\r\n0\r\n").unwrap(), None);
        assert!(parse_chunked(b"zz\r\n").is_err());
    }

    #[test]
    fn requests_carry_token_and_length() {
        let bytes = request("POST", "/api/plans", Some("tok"), Some(b"{}"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("POST /api/plans HTTP/1.1\r\n"));
        assert!(text.contains("Authorization: Bearer tok\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        let text = String::from_utf8(request("GET", "/metrics", None, None)).unwrap();
        assert!(!text.contains("Authorization"));
    }

    #[tokio::test]
    async fn a_connection_is_reused_and_reopened() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // The first connection answers twice (keep-alive) then closes; the second once,
            // chunked.
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            for _ in 0..2 {
                while parse_head(&buf, false).unwrap().is_none() {
                    read_more(&mut s, &mut buf).await.unwrap();
                }
                let head = parse_head(&buf, false).unwrap().unwrap();
                buf.drain(..head.len);
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            while parse_head(&buf, false).unwrap().is_none() {
                read_more(&mut s, &mut buf).await.unwrap();
            }
            s.write_all(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnot\r\n0\r\n\r\n")
                .await
                .unwrap();
        });
        let mut conn = Conn::new(addr);
        let get = request("GET", "/", None, None);
        for _ in 0..2 {
            assert_eq!(
                conn.send(&get).await.unwrap(),
                Response {
                    status: 200,
                    body: b"ok".to_vec()
                }
            );
        }
        // The server closed the first connection: this attempt fails and drops it ...
        assert!(conn.send(&get).await.is_err());
        // ... and the next one opens a new connection.
        let response = conn.send(&get).await.unwrap();
        assert_eq!((response.status, response.text().as_str()), (404, "not"));
    }
}
