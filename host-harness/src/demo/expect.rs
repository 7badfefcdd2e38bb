//! What a phase must show, and the summary rows.

use super::*;

pub(crate) fn short(pod: &str) -> &str {
    pod.rsplit('-').next().unwrap_or(pod)
}

/// What a phase must show: exact attempts for some pods, the rest of the
/// attempts shared by a set of pods (each at least once), every other pod
/// none; and how many answers were 5xx.
#[derive(Clone, Debug)]
pub struct Expect {
    pub exact: Vec<(&'static str, u64)>,
    pub spread: Vec<&'static str>,
    pub spread_total: u64,
    pub client_errors: usize,
}

impl Expect {
    pub fn only(pod: &'static str, n: u64) -> Expect {
        Expect {
            exact: vec![(pod, n)],
            spread: vec![],
            spread_total: 0,
            client_errors: 0,
        }
    }

    /// `total` attempts shared by `pods`, each at least once; no 5xx.
    pub fn spread(pods: &[&'static str], total: u64) -> Expect {
        Expect {
            exact: vec![],
            spread: pods.to_vec(),
            spread_total: total,
            client_errors: 0,
        }
    }

    pub(crate) fn text(&self) -> String {
        let mut parts: Vec<String> = self
            .exact
            .iter()
            .map(|(p, n)| format!("{} x{n}", short(p)))
            .collect();
        if !self.spread.is_empty() {
            let names: Vec<&str> = self.spread.iter().map(|p| short(p)).collect();
            parts.push(format!(
                "{} over {{{}}}",
                self.spread_total,
                names.join(", ")
            ));
        }
        let mut s = parts.join(", ");
        if self.client_errors > 0 {
            s.push_str(&format!("; {} x 5xx", self.client_errors));
        }
        s
    }

    pub(crate) fn check(&self, attempts: &BTreeMap<String, u64>, client_errors: usize) -> bool {
        let mut ok = client_errors == self.client_errors;
        let mut spread_sum = 0;
        for (pod, n) in attempts {
            if let Some((_, want)) = self.exact.iter().find(|(p, _)| p == pod) {
                ok &= n == want;
            } else if self.spread.contains(&pod.as_str()) {
                ok &= *n >= 1;
                spread_sum += n;
            } else {
                ok &= *n == 0;
            }
        }
        for (pod, want) in &self.exact {
            ok &= attempts.get(*pod).copied().unwrap_or(0) == *want;
        }
        for pod in &self.spread {
            ok &= attempts.get(*pod).copied().unwrap_or(0) >= 1;
        }
        ok && spread_sum == self.spread_total
    }
}

pub(crate) fn observed_text(attempts: &BTreeMap<String, u64>, client_errors: usize) -> String {
    let mut parts: Vec<String> = attempts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, n)| format!("{} x{n}", short(p)))
        .collect();
    if parts.is_empty() {
        parts.push("no pod".into());
    }
    let mut s = parts.join(", ");
    if client_errors > 0 {
        s.push_str(&format!("; {client_errors} x 5xx"));
    }
    s
}

pub(crate) struct Row {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) expected: String,
    pub(crate) observed: String,
    pub(crate) pass: bool,
}
