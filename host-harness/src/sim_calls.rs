//! The simulated host's side of `dispatch_http_call`: the calls the filter
//! made, and their answers as a test scripts them (`SimEnvoy::admin`).

use std::time::Duration;

use super::{lock, nanos, SimEnvoy};

/// One `dispatch_http_call`, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub timeout: Duration,
    /// The worker whose root made it (set once its callback returns).
    pub worker: Option<usize>,
    pub sent_at: u64,
    /// Answered (or timed out) already.
    pub done: bool,
}

/// How the simulated admin answers the filter's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAnswer {
    /// An HTTP answer, delivered at once.
    Reply { status: u32, body: Vec<u8> },
    /// No answer: Envoy 1.40 ends the call at its timeout with a local
    /// `504` ("upstream request timeout"), as measured.
    Hang,
    /// The call cannot even be sent (unknown cluster: Envoy's BadArgument).
    Refuse,
}

impl SimEnvoy {
    /// Answers the filter's pending http calls as `admin` says: a reply at
    /// once, a hang at the call's timeout (a local 504, as Envoy 1.40 does).
    pub(super) fn deliver_calls(&mut self) {
        let now = self.now;
        let hang = self.admin == Some(AdminAnswer::Hang);
        let due: Vec<HttpCall> = lock(&self.shared)
            .http_calls
            .iter_mut()
            .filter(|c| !c.done)
            .filter(|c| !hang || now >= c.sent_at.saturating_add(nanos(c.timeout)))
            .map(|c| {
                c.done = true;
                c.clone()
            })
            .collect();
        for call in due {
            let Some(index) = call.worker else {
                continue;
            };
            let response = match &self.admin {
                Some(AdminAnswer::Reply { status, body }) => (Some(*status), body.clone()),
                Some(AdminAnswer::Hang) => (Some(504), b"upstream request timeout".to_vec()),
                _ => (None, Vec::new()),
            };
            let size = response.1.len();
            let admin = self.admin.clone();
            self.on_worker(index, |w, host| {
                host.call_response = Some(response);
                host.admin = admin;
                w.root.on_http_call_response(host, call.token, size);
            });
        }
    }
}
