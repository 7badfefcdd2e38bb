//! Benchmark probe: like the no-op filter (sets one request header), plus
//! one proxy-wasm host call repeated `n` times per request, so that the CPU
//! cost of that call in Envoy can be read off as
//! `(CPU/request(n) - CPU/request(0)) / n`. Used by `bench_engine envoy-probe`
//! to price what the locality-failover filter does on its hot path.
//!
//! Plugin configuration (plain text): `op=<op> n=<count> phase=<request|log> arg=<argument>`
//! - `property` arg = dotted path (`xds.cluster_name`)
//! - `shared_get` arg = key (created at configure time)
//! - `header_get` arg = header name
//! - `header_set` arg = header name, `val=` the value (with `n=1` and the
//!   override-host header this is the floor of any override-host filter)
//! - `now`, `metric_inc`, `alloc` (a 48-byte String, to price wasm malloc)
//! - `job` arg = header name, `val=` the value: the irreducible host work
//!   of a failover filter that steers by override host and keeps retry
//!   attribution: write the header and read the clock on the request, read
//!   `:status` and `x-envoy-attempt-count` from one `get_header_map_pairs`
//!   buffer on the response (found without allocating), nothing else (not
//!   even the marker header every other op writes)

use std::hint::black_box;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { probe: Probe::default() }) });
}}

#[derive(Clone, Default)]
struct Probe {
    op: String,
    n: u32,
    on_log: bool,
    arg: String,
    /// Value written by `header_set` (default: two unknown addresses).
    val: String,
    metric: u32,
}

impl Probe {
    fn run(&self) {
        let path: Vec<&str> = self.arg.split('.').collect();
        for _ in 0..self.n {
            match self.op.as_str() {
                "property" => {
                    black_box(hostcalls::get_property(path.clone()).ok());
                }
                "shared_get" => {
                    black_box(hostcalls::get_shared_data(&self.arg).ok());
                }
                "header_get" => {
                    black_box(hostcalls::get_map_value(MapType::HttpRequestHeaders, &self.arg).ok());
                }
                "header_set" | "job" => {
                    let value = if self.val.is_empty() { "10.0.0.1:8080,10.0.0.2:8080" } else { self.val.as_str() };
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &self.arg, Some(value));
                    if self.op == "job" {
                        black_box(hostcalls::get_current_time().ok());
                    }
                }
                "now" => {
                    black_box(hostcalls::get_current_time().ok());
                }
                "metric_inc" => {
                    let _ = hostcalls::increment_metric(self.metric, 1);
                }
                "alloc" => {
                    black_box(String::from(black_box("0123456789012345678901234567890123456789abcdefgh")));
                }
                _ => {}
            }
        }
    }
}

struct Root {
    probe: Probe,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut p = Probe::default();
        for kv in text.split_whitespace() {
            match kv.split_once('=') {
                Some(("op", v)) => p.op = v.to_string(),
                Some(("n", v)) => p.n = v.parse().unwrap_or(0),
                Some(("phase", v)) => p.on_log = v == "log",
                Some(("arg", v)) => p.arg = v.to_string(),
                Some(("val", v)) => p.val = v.to_string(),
                _ => {}
            }
        }
        if p.op == "shared_get" {
            let _ = hostcalls::set_shared_data(&p.arg, Some(&7u64.to_le_bytes()), None);
        }
        if p.op == "metric_inc" {
            p.metric = hostcalls::define_metric(MetricType::Counter, "probe.counter").unwrap_or(0);
        }
        self.probe = p;
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request { probe: self.probe.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    probe: Probe,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // `job` is the irreducible work alone: no marker header.
        if self.probe.op != "job" {
            self.set_http_request_header("x-noop-filter", Some("1"));
        }
        if !self.probe.on_log {
            self.probe.run();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.probe.op == "job" {
            black_box(status_and_attempts());
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.probe.on_log {
            self.probe.run();
        }
    }
}

extern "C" {
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
}

/// `:status` and `x-envoy-attempt-count` from one buffer of every response
/// header (proxy-wasm's pairs encoding: count, then key and value lengths,
/// then NUL-terminated keys and values), as the filter reads them.
fn status_and_attempts() -> (Option<u16>, Option<u32>) {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out pointers are valid; the host allocated the buffer with
    // this module's allocator, so it is taken back as a Vec and freed.
    let bytes = unsafe {
        if proxy_get_header_map_pairs(2, &mut data, &mut size) != 0 || data.is_null() {
            return (None, None);
        }
        Vec::from_raw_parts(data, size, size)
    };
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = u32_at(0).unwrap_or(0);
    let mut at = 4 + 8 * count;
    let (mut status, mut attempts) = (None, None);
    for i in 0..count {
        let (Some(k), Some(v)) = (u32_at(4 + 8 * i), u32_at(8 + 8 * i)) else { break };
        let (key, value) = (bytes.get(at..at + k), bytes.get(at + k + 1..at + k + 1 + v));
        at += k + v + 2;
        let number = || std::str::from_utf8(value?).ok()?.parse().ok();
        match key {
            Some(b":status") => status = number().map(|n: u32| n as u16),
            Some(b"x-envoy-attempt-count") => attempts = number(),
            _ => {}
        }
    }
    (status, attempts)
}
