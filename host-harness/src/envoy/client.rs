//! Minimal blocking HTTP/1.1 client: [`http_request`] (one fresh
//! connection per request, `Connection: close`) and [`HttpConnection`] (one
//! kept-alive connection for a series of requests, which Envoy serves on one
//! worker), plus the message parsing the loopback upstreams share.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest header block accepted (request or response).
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` to `addr` with extra request headers. `Host: localhost` is sent
/// unless `headers` has a `host`. The whole exchange is bounded by `timeout`.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    http_request(addr, "GET", path, headers, &[], timeout)
}

/// Any method, with an optional body (sent with `content-length`).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    let raw = build_request(method, path, headers, body, false);
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    (&stream).write_all(&raw)?;

    let mut reader = HttpReader::new(DeadlineReader { stream, deadline });
    let head = reader.read_head()?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        )
    })?;
    read_response(&mut reader, method, &head)
}

fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if find_header_ref(headers, "host").is_none() {
        req.push_str("host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if !keep_alive {
        req.push_str("connection: close\r\n");
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn read_response<R: Read>(
    reader: &mut HttpReader<R>,
    method: &str,
    head: &[u8],
) -> io::Result<HttpResponse> {
    let (status, headers) = parse_response_head(head)?;
    let body = if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Vec::new()
    } else {
        reader.read_body(&headers, true)?
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// One kept-alive HTTP/1.1 connection. Envoy serves all requests of a
/// downstream connection on the worker that accepted it, so a series of
/// requests over one `HttpConnection` meets one worker (one wasm VM).
///
/// When the server closed the connection (it answered `connection: close`,
/// or closed it while idle) the next request opens a new one, which may land
/// on another worker: [`Self::connects`] counts the connections opened.
pub struct HttpConnection {
    addr: SocketAddr,
    timeout: Duration,
    reader: Option<HttpReader<DeadlineReader>>,
    connects: u64,
}

impl HttpConnection {
    /// Opens the connection now (so the caller controls when Envoy accepts it).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<HttpConnection> {
        let mut c = HttpConnection {
            addr,
            timeout,
            reader: None,
            connects: 0,
        };
        c.open()?;
        Ok(c)
    }

    fn open(&mut self) -> io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_nodelay(true)?;
        self.reader = Some(HttpReader::new(DeadlineReader {
            stream,
            deadline: Instant::now() + self.timeout,
        }));
        self.connects += 1;
        Ok(())
    }

    /// Connections opened so far (1 unless the server closed one).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The client side address of the current connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.reader
            .as_ref()
            .and_then(|r| r.inner.stream.local_addr().ok())
    }

    /// Whether the connection is open and the server has not closed it.
    pub fn is_open(&self) -> bool {
        let Some(r) = &self.reader else { return false };
        let s = &r.inner.stream;
        if s.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let open = match s.peek(&mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        let _ = s.set_nonblocking(false);
        open
    }

    /// Closes the connection (the next request opens a new one).
    pub fn close(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.inner.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
        self.request("GET", path, headers, &[])
    }

    /// One request on the connection (reopened first if the server closed
    /// it). A request whose connection closes before any byte of an answer
    /// is sent once more on a new connection (an idle close raced it).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        if !self.is_open() {
            self.close();
            self.open()?;
        }
        let raw = build_request(method, path, headers, body, true);
        match self.exchange(method, &raw) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => {
                self.close();
                self.open()?;
                self.exchange(method, &raw)?.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before a response",
                    )
                })
            }
            Err(e) => {
                self.close();
                Err(e)
            }
        }
    }

    /// Ok(None): closed before any byte of a response.
    fn exchange(&mut self, method: &str, raw: &[u8]) -> io::Result<Option<HttpResponse>> {
        let deadline = Instant::now() + self.timeout;
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "not connected"))?;
        reader.inner.deadline = deadline;
        {
            let stream = &reader.inner.stream;
            stream.set_write_timeout(Some(remaining(deadline)?))?;
            let mut w = stream;
            if let Err(e) = w.write_all(raw) {
                return if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        }
        let head = match reader.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && reader.buf.is_empty() => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let response = read_response(reader, method, &head)?;
        let close = response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let bodiless = method == "HEAD"
            || matches!(response.status, 204 | 304)
            || (100..200).contains(&response.status);
        let delimited = bodiless
            || response.header("content-length").is_some()
            || response
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if close || !delimited {
            self.close();
        }
        Ok(Some(response))
    }
}

impl Drop for HttpConnection {
    fn drop(&mut self) {
        self.close();
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "HTTP request timed out",
        ));
    }
    Ok(deadline - now)
}

/// A `Read` that enforces an overall deadline via the socket read timeout.
struct DeadlineReader {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(remaining(self.deadline)?))?;
        match self.stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP request timed out",
            )),
            r => r,
        }
    }
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn find_header_ref<'a>(headers: &'a [(&str, &str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Splits a header block into its first line and lower-cased headers.
pub(crate) fn parse_head(head: &[u8]) -> io::Result<(String, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).map_err(|_| bad("header block is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok((first, headers))
}

fn parse_response_head(head: &[u8]) -> io::Result<(u16, Vec<(String, String)>)> {
    let (first, headers) = parse_head(head)?;
    let mut parts = first.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {first:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {first:?}")))?;
    Ok((status, headers))
}

/// Buffered HTTP/1.1 message reader. Every method keeps what it has read in
/// its buffer when the underlying read fails (e.g. a read timeout), so the
/// call can simply be repeated.
pub(crate) struct HttpReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> HttpReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HttpReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; Ok(0) at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.inner.read(&mut chunk)?;
        self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        Ok(n)
    }

    /// The header block (without the blank line), or None on a clean end of
    /// stream before any byte of a new message.
    pub(crate) fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).take(pos).collect();
                return Ok(Some(head));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("header block too large"));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of stream inside headers",
                ));
            }
        }
    }

    /// The body that follows a header block: chunked, `content-length`, or
    /// (when `until_eof_otherwise`, i.e. for responses) everything to EOF.
    pub(crate) fn read_body(
        &mut self,
        headers: &[(String, String)],
        until_eof_otherwise: bool,
    ) -> io::Result<Vec<u8>> {
        let chunked = find_header(headers, "transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            return self.read_chunked();
        }
        if let Some(len) = find_header(headers, "content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| bad(format!("bad content-length {len:?}")))?;
            if len > MAX_BODY {
                return Err(bad("body too large"));
            }
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of stream inside body",
                    ));
                }
            }
            return Ok(self.buf.drain(..len).collect());
        }
        if until_eof_otherwise {
            while self.fill()? > 0 {
                if self.buf.len() > MAX_BODY {
                    return Err(bad("body too large"));
                }
            }
            return Ok(std::mem::take(&mut self.buf));
        }
        Ok(Vec::new())
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some((body, used)) = parse_chunked(&self.buf)? {
                self.buf.drain(..used);
                return Ok(body);
            }
            if self.buf.len() > MAX_BODY + MAX_HEAD {
                return Err(bad("body too large"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of stream inside chunked body",
                ));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body at the start of `buf`: Some((body, bytes
/// used)) when complete, None when more bytes are needed.
fn parse_chunked(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let rest = buf.get(pos..).unwrap_or(&[]);
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(rest.get(..eol).unwrap_or(&[]))
            .map_err(|_| bad("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                let rest = buf.get(pos..).unwrap_or(&[]);
                let Some(eol) = find(rest, b"\r\n") else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(buf.get(pos..pos + size).unwrap_or(&[]));
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoding() {
        let raw = b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\nNEXT";
        let (body, used) = parse_chunked(raw).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&raw[used..], b"NEXT");
        assert!(parse_chunked(b"4\r\nWi").unwrap().is_none());
    }

    #[test]
    fn reader_keeps_partial_data() {
        let mut r = HttpReader::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"[..]);
        let head = r.read_head().unwrap().unwrap();
        let (status, headers) = parse_response_head(&head).unwrap();
        assert_eq!(status, 200);
        assert_eq!(r.read_body(&headers, true).unwrap(), b"hi");
    }
}
