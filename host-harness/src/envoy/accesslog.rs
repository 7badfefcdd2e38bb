//! Attempt counting from the access log the generated configs write.
//!
//! The router's `upstream_log` writes one `U` line per upstream attempt
//! (connect failures included: checked on Envoy 1.40, see envoy/NOTES.md), and the
//! connection manager's `access_log` one `D` line per downstream request,
//! into the same file (Envoy shares one buffered writer per path, so lines
//! keep their order). Envoy buffers access logs: start it with a short
//! `--file-flush-interval-msec` (EnvoyOptions does).
//!
//! The generated configs set `always_set_request_id_in_response`, so every
//! response carries the `x-request-id` its log lines show: collect them and
//! use [`AccessLog::wait_for_ids`], which is exact even when lines of
//! earlier requests were still buffered when the mark was taken.
//!
//! ```text
//! U <upstream host|-> <response flags|-> <upstream status|0> <x-request-id> <transport failure reason|->
//! D <status> <response flags|-> <final upstream host|-> <attempt count|-> <x-request-id>
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Router `upstream_log` format: one line per upstream attempt.
pub const UPSTREAM_FORMAT: &str =
    "U %UPSTREAM_HOST% %RESPONSE_FLAGS% %RESPONSE_CODE% %REQ(X-REQUEST-ID)% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n";
/// Connection manager `access_log` format: one line per downstream request.
pub const DOWNSTREAM_FORMAT: &str =
    "D %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %REQ(X-REQUEST-ID)%\n";

/// One upstream attempt (`U` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// `ip:port`; None when no host was selected.
    pub host: Option<String>,
    /// Response flags, e.g. `UF` for a connect failure; empty when none.
    pub flags: String,
    /// Upstream status; 0 when there was no upstream response.
    pub code: u16,
    pub request_id: String,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`, empty when none.
    pub failure: String,
}

/// One downstream request (`D` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// Status sent to the client.
    pub code: u16,
    pub flags: String,
    /// Host of the last attempt.
    pub host: Option<String>,
    /// `%UPSTREAM_REQUEST_ATTEMPT_COUNT%` (0 when not set).
    pub attempts: u32,
    pub request_id: String,
}

impl RequestLine {
    /// How many `U` lines this request should have: its attempt count, less
    /// one when its last try found no host (`UH` no healthy upstream, `NC`
    /// no cluster, `NR` no route: Envoy counts the try, logs no upstream
    /// line).
    pub fn expected_upstream_lines(&self) -> usize {
        let no_host = self
            .flags
            .split(',')
            .any(|f| matches!(f, "UH" | "NC" | "NR"));
        (self.attempts as usize).saturating_sub(usize::from(no_host))
    }
}

/// What a batch of requests did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptCounts {
    pub attempts: Vec<Attempt>,
    pub requests: Vec<RequestLine>,
    /// False when the wait ended before every attempt the `D` lines announce
    /// had its `U` line.
    pub complete: bool,
}

impl AttemptCounts {
    /// Attempts per upstream `ip:port` (attempts without a host are skipped).
    pub fn by_host(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for a in &self.attempts {
            if let Some(h) = &a.host {
                *m.entry(h.clone()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Attempts per endpoint name, given `ip:port` -> name (unknown hosts
    /// are reported under their address).
    pub fn by_name(&self, names: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (host, n) in self.by_host() {
            let key = names.get(&host).cloned().unwrap_or(host);
            *m.entry(key).or_insert(0) += n;
        }
        m
    }

    /// Requests whose answer to the client was a 5xx.
    pub fn client_errors(&self) -> usize {
        self.requests.iter().filter(|r| r.code >= 500).count()
    }
}

/// Reader of one access log file.
#[derive(Clone, Debug)]
pub struct AccessLog {
    path: PathBuf,
}

fn field(s: Option<&str>) -> String {
    match s {
        None | Some("-") => String::new(),
        Some(v) => v.to_string(),
    }
}

fn host(s: Option<&str>) -> Option<String> {
    Some(field(s)).filter(|h| !h.is_empty())
}

impl AccessLog {
    pub fn new(path: impl Into<PathBuf>) -> AccessLog {
        AccessLog { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current end of the log: pass it to [`Self::read_since`] /
    /// [`Self::wait_requests`] to see only what comes after.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Complete lines written after `mark`.
    pub fn read_since(&self, mark: u64) -> (Vec<Attempt>, Vec<RequestLine>) {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(mark)).is_ok() {
                let _ = f.read_to_string(&mut text);
            }
        }
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        let mut attempts = Vec::new();
        let mut requests = Vec::new();
        for line in complete.lines() {
            let mut parts = line.splitn(6, ' ');
            match parts.next() {
                Some("U") => {
                    let host = host(parts.next());
                    let flags = field(parts.next());
                    let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let request_id = field(parts.next());
                    let failure = field(parts.next());
                    attempts.push(Attempt {
                        host,
                        flags,
                        code,
                        request_id,
                        failure,
                    });
                }
                Some("D") => {
                    let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let flags = field(parts.next());
                    let host = host(parts.next());
                    let attempts = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                    let request_id = field(parts.next());
                    requests.push(RequestLine {
                        code,
                        flags,
                        host,
                        attempts,
                        request_id,
                    });
                }
                _ => {}
            }
        }
        (attempts, requests)
    }

    /// Waits until each request id in `ids` has its `D` line (after `mark`)
    /// and every attempt those lines announce has its `U` line (or 500 ms
    /// more passed), or until `timeout`. Only lines of these ids are
    /// returned, `D` lines in log order.
    pub fn wait_for_ids<S: AsRef<str>>(
        &self,
        mark: u64,
        ids: &[S],
        timeout: Duration,
    ) -> AttemptCounts {
        let wanted: std::collections::BTreeSet<&str> = ids.iter().map(|s| s.as_ref()).collect();
        self.wait(
            mark,
            timeout,
            |attempts, lines| {
                let attempts = attempts
                    .into_iter()
                    .filter(|a| wanted.contains(a.request_id.as_str()))
                    .collect();
                let lines = lines
                    .into_iter()
                    .filter(|r| wanted.contains(r.request_id.as_str()))
                    .collect();
                (attempts, lines)
            },
            |lines| {
                let seen: std::collections::BTreeSet<&str> =
                    lines.iter().map(|r| r.request_id.as_str()).collect();
                seen.len() >= wanted.len()
            },
        )
    }

    /// Waits until `requests` `D` lines appeared after `mark` and every
    /// attempt they announce has its `U` line (or 500 ms more passed), or
    /// until `timeout`. Returns what was read either way; `complete` says
    /// whether the counts add up. Caveat: lines of earlier requests that
    /// Envoy had not flushed yet when `mark` was taken are counted too;
    /// prefer [`Self::wait_for_ids`].
    pub fn wait_requests(&self, mark: u64, requests: usize, timeout: Duration) -> AttemptCounts {
        self.wait(
            mark,
            timeout,
            |a, l| (a, l),
            |lines| lines.len() >= requests,
        )
    }

    /// Reads the lines after `mark` (keeping what `select` keeps) every
    /// 10 ms until `enough` holds for the `D` lines and every attempt they
    /// announce has its `U` line, or 500 ms more passed, or `timeout`.
    fn wait(
        &self,
        mark: u64,
        timeout: Duration,
        select: impl Fn(Vec<Attempt>, Vec<RequestLine>) -> (Vec<Attempt>, Vec<RequestLine>),
        enough: impl Fn(&[RequestLine]) -> bool,
    ) -> AttemptCounts {
        let deadline = Instant::now() + timeout;
        let mut all_requests_seen: Option<Instant> = None;
        loop {
            let (attempts, lines) = self.read_since(mark);
            let (attempts, lines) = select(attempts, lines);
            let announced: usize = lines.iter().map(RequestLine::expected_upstream_lines).sum();
            let now = Instant::now();
            if enough(&lines) {
                let since = *all_requests_seen.get_or_insert(now);
                let complete = attempts.len() >= announced;
                if complete || now >= since + Duration::from_millis(500) || now >= deadline {
                    return AttemptCounts {
                        attempts,
                        requests: lines,
                        complete,
                    };
                }
            } else if now >= deadline {
                return AttemptCounts {
                    attempts,
                    requests: lines,
                    complete: false,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
