//! Everything the filter asks of Envoy, as one small trait.
//!
//! The wasm adapter (`crate::wasm`) implements it over its own declaration
//! of the proxy-wasm ABI (`wasm/abi.rs`: the SDK's `hostcalls` panic on
//! statuses they do not expect); the native harness implements it in memory. The filter's logic is written
//! against this trait only, so the same code runs in both.

use std::time::Duration;

/// A host call that failed. The filter logs it and takes the documented
/// safe path; it never unwraps one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host call {call} failed: {status}")]
    Call { call: &'static str, status: String },
    /// `set_shared_data` with a stale CAS: another worker wrote first.
    #[error("shared data changed under us (CAS mismatch)")]
    CasMismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A metric defined by the filter (a counter or a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// The host, seen from the filter. Request-scoped calls act on the request
/// being processed (proxy-wasm sets the current context before each callback).
pub trait Host {
    /// `get_property`: raw bytes, `None` when the property does not exist.
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError>;
    /// A response header's raw value (`on_http_response_headers`), `None`
    /// when absent. The filter reads only `:status` this way: one buffer
    /// instead of `response.code` (a property read, ~2x the host work).
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Every response header in one buffer, encoded as proxy-wasm's
    /// `get_header_map_pairs` returns them ([`decode::header_pairs`]): one
    /// buffer for `:status` and `x-envoy-attempt-count` together.
    fn response_header_pairs(&self) -> Result<Option<Vec<u8>>, HostError> {
        Err(unsupported("get_header_map_pairs"))
    }
    /// Removes a response header (every value; no buffer comes back).
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        let _ = name;
        Err(unsupported("remove_header_map_value(response)"))
    }
    /// Sets (`Some`) or removes (`None`) a request header. Envoy's replace
    /// removes every value the header had; a remove returns no buffer.
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// Ends the request here with a local reply.
    fn send_local_reply(&mut self, status: u32, body: &str) -> Result<(), HostError>;
    /// `get_shared_data`: value and CAS token.
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;
    /// `set_shared_data`; with `cas`, fails with [`HostError::CasMismatch`] if
    /// someone else wrote since that token was read.
    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), HostError>;
    /// Wall clock, nanoseconds since the epoch.
    fn now_nanos(&self) -> u64;
    fn set_tick_period(&mut self, period: Duration) -> Result<(), HostError>;
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    fn increment_metric(&mut self, id: u32, by: i64) -> Result<(), HostError>;
    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), HostError>;
    fn log(&self, level: LogLevel, message: &str);
    /// The plugin configuration bytes (`on_configure`).
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError>;

    /// `dispatch_http_call` from the root context: sends `request` (always a
    /// GET of a path [`AdminGet`] built) to `cluster`; the answer arrives in
    /// `on_http_call_response` with the returned token. Hosts that cannot
    /// call out (benchmarks) keep this default, which refuses.
    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        request: &AdminGet,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let _ = (cluster, request, timeout);
        Err(unsupported("dispatch_http_call"))
    }

    /// Inside `on_http_call_response`: the answer's `:status` (`None` when
    /// the call failed or timed out: Envoy then hands over no headers).
    fn http_call_status(&self) -> Result<Option<u32>, HostError> {
        Err(unsupported("get_header_map_value(http_call_response)"))
    }

    /// Inside `on_http_call_response`: the first `size` bytes of the body.
    fn http_call_body(&self, size: usize) -> Result<Option<Vec<u8>>, HostError> {
        let _ = size;
        Err(unsupported("get_buffer(http_call_response_body)"))
    }
}

fn unsupported(call: &'static str) -> HostError {
    HostError::Call {
        call,
        status: "not supported by this host".into(),
    }
}

/// The one kind of request the filter sends: a GET of a fixed admin path.
///
/// Its fields are private and its only constructor builds the
/// `/config_dump` query, so no code path can make the filter send another
/// method, another path, a body or client-controlled headers to Envoy's
/// admin (which also serves mutating endpoints such as `/quitquitquit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGet {
    path: String,
}

impl AdminGet {
    /// `GET /config_dump?include_eds&mask=...&name_regex=^(a|b)$`: the
    /// endpoint configs (static and dynamic) of exactly the named clusters.
    /// Names are regex-escaped and percent-encoded.
    pub fn config_dump(clusters: &[&str]) -> AdminGet {
        let mut regex = String::from("^(");
        for (i, name) in clusters.iter().enumerate() {
            if i > 0 {
                regex.push('|');
            }
            for c in name.chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    regex.push('\\');
                }
                regex.push(c);
            }
        }
        regex.push_str(")$");
        let mut path = String::from(
            "/config_dump?include_eds&mask=static_endpoint_configs,dynamic_endpoint_configs&name_regex=",
        );
        for b in regex.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                path.push(char::from(b));
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        AdminGet { path }
    }

    pub fn method(&self) -> &'static str {
        "GET"
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Decoders for property encodings observed on Envoy 1.40.
pub mod decode {
    /// `response.code`, `request.time`: i64 little-endian.
    pub fn i64_le(bytes: &[u8]) -> Option<i64> {
        let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        Some(i64::from_le_bytes(arr))
    }

    /// `response.flags`, `upstream.request_attempt_count`: u64 little-endian.
    pub fn u64_le(bytes: &[u8]) -> Option<u64> {
        let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(arr))
    }

    pub fn string(bytes: &[u8]) -> Option<String> {
        std::str::from_utf8(bytes).ok().map(str::to_string)
    }

    /// proxy-wasm's header-pairs encoding: a u32 count, a (key length,
    /// value length) u32 pair per header, then each key and value followed
    /// by a NUL byte; all little-endian. Yields the pairs in order and stops
    /// at the first one that does not fit (a malformed buffer yields what
    /// came before it).
    pub fn header_pairs(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let u32_at = |at: usize| -> Option<usize> {
            let arr: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(arr)).ok()
        };
        let count = u32_at(0).unwrap_or(0);
        // The data starts after the count and the length table.
        let mut data = count
            .checked_mul(8)
            .and_then(|t| t.checked_add(4))
            .unwrap_or(usize::MAX);
        (0..count).map_while(move |i| {
            let entry = i.checked_mul(8)?.checked_add(4)?;
            let key_len = u32_at(entry)?;
            let value_len = u32_at(entry.checked_add(4)?)?;
            let key_end = data.checked_add(key_len)?;
            let key = bytes.get(data..key_end)?;
            let value_end = key_end.checked_add(1)?.checked_add(value_len)?;
            let value = bytes.get(key_end.checked_add(1)?..value_end)?;
            // Each key and value ends with a NUL.
            if bytes.get(key_end) != Some(&0) || bytes.get(value_end) != Some(&0) {
                return None;
            }
            data = value_end.checked_add(1)?;
            Some((key, value))
        })
    }

    /// The header-pairs encoding of `pairs` (for hosts that simulate Envoy).
    pub fn encode_header_pairs<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let count = pairs.clone().count() as u32;
        out.extend_from_slice(&count.to_le_bytes());
        for (k, v) in pairs.clone() {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    /// `x-envoy-attempt-count` as Envoy's router writes it: a decimal
    /// count from 1. Anything else is `None`.
    pub fn attempt_count(bytes: &[u8]) -> Option<u32> {
        let text = std::str::from_utf8(bytes).ok()?;
        if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().filter(|n| *n > 0)
    }

    /// `:status` as Envoy writes it: 3 ASCII digits. Anything else is `None`.
    pub fn status(bytes: &[u8]) -> Option<u16> {
        let [a, b, c] = <[u8; 3]>::try_from(bytes).ok()?;
        let digit = |d: u8| d.is_ascii_digit().then(|| u16::from(d - b'0'));
        Some(digit(a)? * 100 + digit(b)? * 10 + digit(c)?)
    }
}

#[cfg(test)]
mod tests {
    use super::decode;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn status_is_three_ascii_digits() {
        assert_eq!(decode::status(b"200"), Some(200));
        assert_eq!(decode::status(b"503"), Some(503));
        for bad in [
            &b""[..],
            b"20",
            b"2000",
            b"2x0",
            b" 200",
            &[0xff, b'0', b'0'],
        ] {
            assert_eq!(decode::status(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_pairs_round_trip_and_stop_at_a_truncation() {
        let pairs = [
            (":status", "200"),
            ("x-envoy-attempt-count", "2"),
            ("empty", ""),
        ];
        let bytes = decode::encode_header_pairs(pairs.iter().copied());
        let back: Vec<(&[u8], &[u8])> = decode::header_pairs(&bytes).collect();
        let want: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(back, want);
        // Every truncation yields a prefix of the pairs, never a wrong one.
        for len in 0..bytes.len() {
            let got: Vec<_> = decode::header_pairs(&bytes[..len]).collect();
            assert!(got.len() < pairs.len(), "{len}");
            assert_eq!(got[..], want[..got.len()], "{len}");
        }
        // A count far beyond the buffer, and lengths past its end.
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode::header_pairs(&huge).count() <= pairs.len());
        let mut long = bytes;
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode::header_pairs(&long).count(), 0);
    }

    #[test]
    fn attempt_count_is_a_positive_decimal() {
        assert_eq!(decode::attempt_count(b"1"), Some(1));
        assert_eq!(decode::attempt_count(b"12"), Some(12));
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b" 1",
            b"1 ",
            b"x",
            b"9999999999",
            &[0xff],
        ] {
            assert_eq!(decode::attempt_count(bad), None, "{bad:?}");
        }
    }
}
