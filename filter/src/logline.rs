//! The filter's ejection log lines: written here by the filter and parsed
//! here by whoever reads Envoy's log (the envoy-mode harness), so the text
//! and its reader cannot drift apart.
//!
//! The two lines, after whatever prefix Envoy puts in front of a wasm log:
//!
//! ```text
//! locality-failover: <cluster>: ejected <address> ([Consecutive5xx])
//! locality-failover: <cluster>: <address> returns from ejection
//! ```
//!
//! The bracketed list names the detectors that fired; it is for operators
//! and [`parse`] does not read it.

use crate::outlier::Detection;

/// What every filter log line starts with.
pub const PREFIX: &str = "locality-failover: ";

const RETURNS: &str = " returns from ejection";

/// The line the filter logs when `address` of `cluster` is ejected by the
/// detectors `why`.
pub fn ejected(cluster: &str, address: &str, why: &[Detection]) -> String {
    format!("{PREFIX}{cluster}: ejected {address} ({why:?})")
}

/// The line the filter logs when `address` of `cluster` returns from
/// ejection.
pub fn returned(cluster: &str, address: &str) -> String {
    format!("{PREFIX}{cluster}: {address}{RETURNS}")
}

/// An ejection event read back from a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `address` was ejected.
    Ejected { cluster: &'a str, address: &'a str },
    /// `address` returned from ejection.
    Returned { cluster: &'a str, address: &'a str },
}

/// Reads the ejection event in one log line, if it holds one of the lines
/// [`ejected`] and [`returned`] write (anything before [`PREFIX`] is
/// ignored). Cluster names may contain `: `-free text such as
/// `outbound|8000||svc`; addresses are `ip:port`.
pub fn parse(line: &str) -> Option<Event<'_>> {
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let (cluster, what) = rest.split_once(": ")?;
    let what = what.trim_end();
    if let Some(address) = what.strip_suffix(RETURNS) {
        return is_address(address).then_some(Event::Returned { cluster, address });
    }
    let address = what.strip_prefix("ejected ")?.split(' ').next()?;
    is_address(address).then_some(Event::Ejected { cluster, address })
}

fn is_address(s: &str) -> bool {
    s.parse::<std::net::SocketAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const CLUSTER: &str = "outbound|8000||svc";

    #[test]
    fn parse_reads_back_what_the_filter_writes() {
        let line = ejected(CLUSTER, "127.0.0.3:80", &[Detection::Consecutive5xx]);
        assert_eq!(
            line,
            "locality-failover: outbound|8000||svc: ejected 127.0.0.3:80 ([Consecutive5xx])"
        );
        let in_envoy_log = format!("[2026-01-01][12][info][wasm] wasm log vm: {line}\n");
        assert_eq!(
            parse(&in_envoy_log),
            Some(Event::Ejected {
                cluster: CLUSTER,
                address: "127.0.0.3:80"
            })
        );
        let line = returned(CLUSTER, "127.0.0.2:8080");
        assert_eq!(
            line,
            "locality-failover: outbound|8000||svc: 127.0.0.2:8080 returns from ejection"
        );
        assert_eq!(
            parse(&line),
            Some(Event::Returned {
                cluster: CLUSTER,
                address: "127.0.0.2:8080"
            })
        );
    }

    #[test]
    fn parse_ignores_other_filter_lines() {
        for line in [
            "locality-failover: shared outlier state could not be updated",
            "locality-failover: sweep of svc: host call failed",
            "locality-failover: svc: ejected after consecutive failures",
            "some other log line",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
