//! Turning Envoy's final answer into per-endpoint outcomes.
//!
//! A filter sees a request once, with its final answer; attempts that Envoy
//! retried are invisible. They are inferred from what the filter asked for
//! (the ranked list it wrote), `upstream.request_attempt_count`, and
//! `upstream.address` (which entry served the last attempt). Observed on
//! Envoy 1.40: with override-host each retry takes the next entry; with
//! original-dst every attempt goes to the one address.

use crate::outlier::Outcome;

/// Envoy `StreamInfo::CoreResponseFlag` bits (`response.flags`).
pub mod flags {
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const LOCAL_RESET: u64 = 0x8;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    pub const UPSTREAM_OVERFLOW: u64 = 0x80;
    pub const NO_ROUTE_FOUND: u64 = 0x100;
    pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: u64 = 0x8000;
    pub const NO_CLUSTER_FOUND: u64 = 0x100_0000;
}

/// Most attempts of one request the filter attributes. Envoy's own retry
/// policies rarely exceed a handful; a larger `upstream.request_attempt_count`
/// is clamped so a wrong host answer cannot make the filter loop or allocate
/// without bound.
pub const MAX_ATTEMPTS: usize = 32;

/// What Envoy reports about a finished request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalAnswer {
    /// `response.code` (0 when there was none).
    pub code: u16,
    /// `response.flags`.
    pub flags: u64,
    /// `upstream.address`, when an upstream host was selected.
    pub upstream: Option<String>,
    /// `upstream.request_attempt_count`.
    pub attempts: u64,
}

/// How retries move through what the filter wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryShape {
    /// Attempt k went to entry k of the list (override-host).
    NextEntry,
    /// Every attempt went to the same address (original-dst).
    SameAddress,
    /// Attempts are spread by Envoy inside a backend: only the last one is known.
    Unknown,
    /// Stateful session: the first attempt went to the pick (when Envoy
    /// honoured it), retries to hosts Envoy's balancer chose; only the
    /// last one's address is known (`upstream.address`).
    PickThenBalancer,
}

/// The outcome of the final attempt, or `None` when no upstream answered
/// for a reason that is not the upstream's fault (no healthy upstream,
/// downstream disconnect, overflow).
pub fn final_outcome(answer: &FinalAnswer) -> Option<Outcome> {
    let f = answer.flags;
    if f & flags::UPSTREAM_REQUEST_TIMEOUT != 0 {
        return Some(Outcome::Timeout);
    }
    if f & (flags::UPSTREAM_CONNECTION_FAILURE
        | flags::UPSTREAM_CONNECTION_TERMINATION
        | flags::UPSTREAM_REMOTE_RESET)
        != 0
    {
        return Some(Outcome::ConnectFailed);
    }
    if f & (flags::NO_HEALTHY_UPSTREAM
        | flags::NO_ROUTE_FOUND
        | flags::NO_CLUSTER_FOUND
        | flags::UPSTREAM_OVERFLOW
        | flags::DOWNSTREAM_CONNECTION_TERMINATION
        | flags::LOCAL_RESET)
        != 0
    {
        return None;
    }
    if answer.code == 0 || answer.upstream.is_none() {
        return None;
    }
    Some(Outcome::Http(answer.code))
}

/// Per-address outcomes of one request, earliest attempt first. Attempts
/// that were retried failed, but how is not visible: they count as a
/// connect failure / 503, the common case of a retried attempt.
pub fn attribute(
    list: &[String],
    answer: &FinalAnswer,
    shape: RetryShape,
) -> Vec<(String, Outcome)> {
    let last = final_outcome(answer);
    let attempts = usize::try_from(answer.attempts)
        .unwrap_or(MAX_ATTEMPTS)
        .clamp(1, MAX_ATTEMPTS);
    let mut out = Vec::new();
    match shape {
        RetryShape::NextEntry => {
            let tried = attempts.min(list.len());
            // The entry that served the last attempt; fall back to position.
            let last_index = answer
                .upstream
                .as_ref()
                .and_then(|u| list.iter().take(tried).position(|e| e == u))
                .unwrap_or(tried.saturating_sub(1));
            for entry in list.iter().take(last_index) {
                out.push((entry.clone(), Outcome::ConnectFailed));
            }
            if let (Some(outcome), Some(entry)) = (last, list.get(last_index)) {
                out.push((entry.clone(), outcome));
            }
        }
        RetryShape::SameAddress => {
            if let Some(entry) = list.first() {
                for _ in 1..attempts {
                    out.push((entry.clone(), Outcome::ConnectFailed));
                }
                if let Some(outcome) = last {
                    out.push((entry.clone(), outcome));
                }
            }
        }
        RetryShape::PickThenBalancer => {
            // A retried request: the pick's attempt failed (Envoy retries
            // only failures), unless the pick also served the last attempt.
            if let Some(pick) = list.first() {
                if attempts > 1 && answer.upstream.as_ref() != Some(pick) {
                    out.push((pick.clone(), Outcome::ConnectFailed));
                }
            }
            if let (Some(outcome), Some(upstream)) = (last, &answer.upstream) {
                out.push((upstream.clone(), outcome));
            }
        }
        RetryShape::Unknown => {
            if let (Some(outcome), Some(upstream)) = (last, &answer.upstream) {
                out.push((upstream.clone(), outcome));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn success_on_first_entry() {
        let a = FinalAnswer {
            code: 200,
            upstream: Some("a".into()),
            attempts: 1,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["a", "b"]), &a, RetryShape::NextEntry),
            vec![("a".to_string(), Outcome::Http(200))]
        );
    }

    #[test]
    fn retried_entries_failed() {
        let a = FinalAnswer {
            code: 200,
            upstream: Some("c".into()),
            attempts: 3,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["a", "b", "c"]), &a, RetryShape::NextEntry),
            vec![
                ("a".to_string(), Outcome::ConnectFailed),
                ("b".to_string(), Outcome::ConnectFailed),
                ("c".to_string(), Outcome::Http(200)),
            ]
        );
    }

    #[test]
    fn connect_failure_on_last_attempt_without_address() {
        let a = FinalAnswer {
            code: 503,
            flags: flags::UPSTREAM_CONNECTION_FAILURE | flags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
            upstream: None,
            attempts: 2,
        };
        assert_eq!(
            attribute(&list(&["a", "b", "c"]), &a, RetryShape::NextEntry),
            vec![
                ("a".to_string(), Outcome::ConnectFailed),
                ("b".to_string(), Outcome::ConnectFailed),
            ]
        );
    }

    #[test]
    fn session_retry_fails_the_pick_and_credits_the_balancers_host() {
        let retried = FinalAnswer {
            code: 200,
            upstream: Some("b".into()),
            attempts: 2,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["a"]), &retried, RetryShape::PickThenBalancer),
            vec![
                ("a".to_string(), Outcome::ConnectFailed),
                ("b".to_string(), Outcome::Http(200)),
            ]
        );
        // Envoy did not honour the pick (it held it unhealthy): one attempt
        // elsewhere, nothing against the pick.
        let overridden = FinalAnswer {
            code: 200,
            upstream: Some("b".into()),
            attempts: 1,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["a"]), &overridden, RetryShape::PickThenBalancer),
            vec![("b".to_string(), Outcome::Http(200))]
        );
    }

    #[test]
    fn upstream_5xx_is_http() {
        let a = FinalAnswer {
            code: 503,
            upstream: Some("a".into()),
            attempts: 1,
            ..Default::default()
        };
        assert_eq!(final_outcome(&a), Some(Outcome::Http(503)));
    }

    #[test]
    fn no_healthy_upstream_blames_nobody() {
        let a = FinalAnswer {
            code: 503,
            flags: flags::NO_HEALTHY_UPSTREAM,
            upstream: None,
            attempts: 0,
        };
        assert!(attribute(&list(&["a"]), &a, RetryShape::NextEntry).is_empty());
    }

    #[test]
    fn timeout_is_local_origin() {
        let a = FinalAnswer {
            code: 504,
            flags: flags::UPSTREAM_REQUEST_TIMEOUT,
            upstream: Some("a".into()),
            attempts: 1,
        };
        assert_eq!(final_outcome(&a), Some(Outcome::Timeout));
    }

    #[test]
    fn original_dst_repeats_the_address() {
        let a = FinalAnswer {
            code: 200,
            upstream: Some("a".into()),
            attempts: 2,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["a"]), &a, RetryShape::SameAddress),
            vec![
                ("a".to_string(), Outcome::ConnectFailed),
                ("a".to_string(), Outcome::Http(200)),
            ]
        );
    }

    #[test]
    fn a_huge_attempt_count_is_clamped() {
        let a = FinalAnswer {
            code: 200,
            upstream: Some("a".into()),
            attempts: 0x0102_0200_0100_2d6e,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["a"]), &a, RetryShape::SameAddress).len(),
            MAX_ATTEMPTS
        );
        let failed = FinalAnswer {
            code: 503,
            flags: flags::UPSTREAM_CONNECTION_FAILURE,
            upstream: None,
            attempts: u64::MAX,
        };
        assert_eq!(
            attribute(&list(&["a", "b"]), &failed, RetryShape::NextEntry).len(),
            2
        );
    }

    #[test]
    fn unknown_shape_only_blames_the_last() {
        let a = FinalAnswer {
            code: 500,
            upstream: Some("x".into()),
            attempts: 3,
            ..Default::default()
        };
        assert_eq!(
            attribute(&list(&["backend"]), &a, RetryShape::Unknown),
            vec![("x".to_string(), Outcome::Http(500))]
        );
    }
}
