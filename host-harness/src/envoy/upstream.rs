//! Loopback HTTP/1.1 upstreams whose behaviour is switched at run time.
//!
//! Each upstream listens on its own loopback IP (`127.<a>.<b>.<c>`, unique in
//! this process; the second octet is derived from the process id so
//! concurrent test processes do not meet) and an ephemeral port. States:
//!
//! - [`Behavior::Healthy`]: `200`, body = the endpoint name;
//! - [`Behavior::Http`]`(code)`: that status, body `"<name> <code>"`;
//! - [`Behavior::Refused`]: the listener is closed and every accepted
//!   (possibly pooled, keep-alive) connection is shut down, so Envoy's next
//!   attempt gets a real connect failure. Leaving `Refused` binds the same
//!   `ip:port` again.
//!
//! Every response carries `x-upstream-name: <name>`. Each server counts the
//! requests it answered (whatever the status) and records their headers.
//! All threads stop when [`Upstreams`] is dropped.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::client::{find_header, parse_head, HttpReader};

/// How an upstream answers: the one behaviour type of the harness, shared
/// with the simulated host.
pub use crate::sim::Behavior;

/// The former name of [`Behavior`], kept while `bin/bench_engine.rs` still
/// uses it.
pub type UpstreamState = Behavior;

/// One request an upstream answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Status it was answered with.
    pub status: u16,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Requests recorded per upstream, oldest dropped beyond this.
const MAX_RECORDED: usize = 10_000;
/// Poll period of the accept loops and of the connection threads' stop check.
const POLL: Duration = Duration::from_millis(3);
const READ_POLL: Duration = Duration::from_millis(50);
/// Time given to Envoy to notice closed pooled connections after `Refused`.
const SETTLE: Duration = Duration::from_millis(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Server {
    name: String,
    addr: SocketAddr,
    state: Mutex<Behavior>,
    listener: Mutex<Option<TcpListener>>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    answered: AtomicU64,
    accepted: AtomicU64,
    recorded: Mutex<Vec<RecordedRequest>>,
    stop: AtomicBool,
    conn_threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A set of named loopback upstreams.
pub struct Upstreams {
    servers: Vec<Arc<Server>>,
    accept_threads: Vec<JoinHandle<()>>,
}

fn next_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let second = 10 + (std::process::id() % 240) as u8;
    Ipv4Addr::new(127, second, ((n / 250) % 256) as u8, (n % 250 + 2) as u8)
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix, so re-binding works with connections
    // of the previous listener still in TIME_WAIT.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok(l);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Upstreams {
    /// Starts one healthy upstream per name (names must be unique).
    pub fn start<S: AsRef<str>>(names: &[S]) -> io::Result<Upstreams> {
        let mut servers: Vec<Arc<Server>> = Vec::new();
        for name in names {
            let name = name.as_ref().to_string();
            if servers.iter().any(|s| s.name == name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("duplicate upstream name {name:?}"),
                ));
            }
            let listener = bind(SocketAddr::from((next_loopback_ip(), 0)))?;
            let addr = listener.local_addr()?;
            servers.push(Arc::new(Server {
                name,
                addr,
                state: Mutex::new(Behavior::Healthy),
                listener: Mutex::new(Some(listener)),
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                recorded: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
                conn_threads: Mutex::new(Vec::new()),
            }));
        }
        let mut accept_threads = Vec::new();
        for s in &servers {
            let s = Arc::clone(s);
            accept_threads.push(
                thread::Builder::new()
                    .name(format!("upstream-{}", s.name))
                    .spawn(move || accept_loop(s))?,
            );
        }
        Ok(Upstreams {
            servers,
            accept_threads,
        })
    }

    fn server(&self, name: &str) -> io::Result<&Arc<Server>> {
        self.servers.iter().find(|s| s.name == name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no upstream named {name:?}"),
            )
        })
    }

    /// Names, in start order.
    pub fn names(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.name.clone()).collect()
    }

    /// `ip:port` of an upstream.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.server(name).ok().map(|s| s.addr)
    }

    /// Name of the upstream at `addr` (`ip:port` text, as Envoy logs it).
    pub fn name_of(&self, addr: &str) -> Option<&str> {
        self.servers
            .iter()
            .find(|s| s.addr.to_string() == addr)
            .map(|s| s.name.as_str())
    }

    /// Map `ip:port` text -> name, for translating Envoy's host addresses.
    pub fn address_map(&self) -> BTreeMap<String, String> {
        self.servers
            .iter()
            .map(|s| (s.addr.to_string(), s.name.clone()))
            .collect()
    }

    pub fn state(&self, name: &str) -> Option<Behavior> {
        self.server(name).ok().map(|s| *lock(&s.state))
    }

    /// Switches an upstream's behaviour. To `Refused`: closes the listener
    /// and shuts down every open connection, then waits ~30 ms so Envoy
    /// drops its pooled connections. From `Refused`: binds the same address
    /// again before returning.
    pub fn set(&self, name: &str, state: Behavior) -> io::Result<()> {
        let s = self.server(name)?;
        // Lock order everywhere: listener, then state / conns.
        let mut listener = lock(&s.listener);
        *lock(&s.state) = state;
        match state {
            Behavior::Refused => {
                let had_listener = listener.take().is_some();
                drop(listener);
                let closed = s.close_connections();
                if had_listener || closed > 0 {
                    thread::sleep(SETTLE);
                }
            }
            Behavior::Healthy | Behavior::Http(_) => {
                if listener.is_none() {
                    *listener = Some(bind(s.addr)?);
                }
            }
        }
        Ok(())
    }

    /// Requests answered by one upstream (any status).
    pub fn answered(&self, name: &str) -> u64 {
        self.server(name)
            .map(|s| s.answered.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Requests answered, per name (every upstream listed, zeros included).
    pub fn answered_all(&self) -> BTreeMap<String, u64> {
        self.servers
            .iter()
            .map(|s| (s.name.clone(), s.answered.load(Ordering::SeqCst)))
            .collect()
    }

    /// Connections accepted by one upstream so far.
    pub fn connections_accepted(&self, name: &str) -> u64 {
        self.server(name)
            .map(|s| s.accepted.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Connections currently open on one upstream.
    pub fn open_connections(&self, name: &str) -> usize {
        self.server(name).map(|s| lock(&s.conns).len()).unwrap_or(0)
    }

    /// Zeroes the answered counters and recorded requests.
    pub fn reset_counts(&self) {
        for s in &self.servers {
            s.answered.store(0, Ordering::SeqCst);
            lock(&s.recorded).clear();
        }
    }

    /// Requests recorded by one upstream (at most the last 10 000).
    pub fn requests(&self, name: &str) -> Vec<RecordedRequest> {
        self.server(name)
            .map(|s| lock(&s.recorded).clone())
            .unwrap_or_default()
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        for s in &self.servers {
            s.stop.store(true, Ordering::SeqCst);
            lock(&s.listener).take();
            s.close_connections();
        }
        for t in self.accept_threads.drain(..) {
            let _ = t.join();
        }
        for s in &self.servers {
            let threads: Vec<_> = lock(&s.conn_threads).drain(..).collect();
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

impl Server {
    /// Shuts down every open connection; returns how many there were.
    fn close_connections(&self) -> usize {
        let conns: Vec<TcpStream> = lock(&self.conns).drain().map(|(_, c)| c).collect();
        for c in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        conns.len()
    }
}

fn accept_loop(s: Arc<Server>) {
    while !s.stop.load(Ordering::SeqCst) {
        let accepted = {
            let guard = lock(&s.listener);
            match guard.as_ref().map(|l| l.accept()) {
                Some(Ok((stream, _peer))) => {
                    // Register while the listener lock is held, so a
                    // concurrent switch to Refused also closes this one.
                    let id = s.next_conn.fetch_add(1, Ordering::SeqCst);
                    match stream.try_clone() {
                        Ok(clone) => {
                            lock(&s.conns).insert(id, clone);
                            s.accepted.fetch_add(1, Ordering::SeqCst);
                            Some((id, stream))
                        }
                        Err(_) => None,
                    }
                }
                _ => None,
            }
        };
        match accepted {
            Some((id, stream)) => {
                let s2 = Arc::clone(&s);
                let spawned = thread::Builder::new()
                    .name(format!("upstream-{}-conn", s.name))
                    .spawn(move || serve_connection(s2, id, stream));
                match spawned {
                    Ok(handle) => {
                        let mut threads = lock(&s.conn_threads);
                        threads.retain(|t| !t.is_finished());
                        threads.push(handle);
                    }
                    Err(_) => {
                        if let Some(c) = lock(&s.conns).remove(&id) {
                            let _ = c.shutdown(Shutdown::Both);
                        }
                    }
                }
            }
            None => thread::sleep(POLL),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn serve_connection(s: Arc<Server>, id: u64, stream: TcpStream) {
    let _ = serve_requests(&s, &stream);
    let _ = stream.shutdown(Shutdown::Both);
    lock(&s.conns).remove(&id);
}

fn serve_requests(s: &Server, stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    stream.set_nodelay(true)?;
    let mut reader = HttpReader::new(stream);
    loop {
        let head = loop {
            if s.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match reader.read_head() {
                Ok(Some(head)) => break head,
                Ok(None) => return Ok(()),
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e),
            }
        };
        let (request_line, headers) = parse_head(&head)?;
        loop {
            if s.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match reader.read_body(&headers, false) {
                Ok(_) => break,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        let (status, body) = match *lock(&s.state) {
            Behavior::Healthy => (200, s.name.clone()),
            Behavior::Http(code) => (code, format!("{} {code}", s.name)),
            Behavior::Refused => return Ok(()),
        };
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let close = find_header(&headers, "connection")
            .map(|v| v.eq_ignore_ascii_case("close"))
            .unwrap_or(false);
        {
            let mut rec = lock(&s.recorded);
            if rec.len() >= MAX_RECORDED {
                rec.remove(0);
            }
            rec.push(RecordedRequest {
                method,
                path,
                headers,
                status,
            });
        }
        // Count before answering: once the client sees the answer, the count
        // includes it.
        s.answered.fetch_add(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-upstream-name: {}\r\n{}\r\n{body}",
            reason(status),
            body.len(),
            s.name,
            if close { "connection: close\r\n" } else { "" },
        );
        let mut w = stream;
        w.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
