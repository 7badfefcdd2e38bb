//! Which cluster a request goes to: `xds.cluster_name`, read per request,
//! or the one cluster the operator declared (`inventory.cluster`).
//!
//! The property read costs a host buffer and Envoy's property evaluation on
//! every request; a filter whose every route goes to one cluster does not
//! need it. The declaration is trusted but checked: the first request reads
//! the name, and so does the first request after every tick. When a check
//! finds another cluster the declaration is dropped for the life of the
//! configuration (one error log line, `config_errors` counted) and every
//! request is asked its cluster, exactly as without the declaration. So a
//! wrong declaration steers at most one tick period of requests.

use crate::host::{Host, LogLevel};
use crate::metrics::{Metric, Metrics};

use super::cluster::request_cluster_name;

/// The routed cluster of one request.
pub(super) enum Routed {
    /// The declared cluster ([`Declared::name`]).
    Declared,
    /// Read from the request.
    Read(String),
}

/// `inventory.cluster` and where its check stands.
#[derive(Debug)]
pub(super) struct Declared {
    pub(super) name: String,
    /// The next request reads `xds.cluster_name` to check the declaration.
    check_due: bool,
    /// A request went elsewhere: the declaration no longer counts.
    refuted: bool,
}

impl Declared {
    pub(super) fn new(name: &str) -> Self {
        Declared {
            name: name.to_string(),
            check_due: true,
            refuted: false,
        }
    }

    /// `on_tick`: the next request checks the declaration again.
    pub(super) fn check_next(&mut self) {
        self.check_due = true;
    }
}

/// The routed cluster of the current request. `None` when it has none (a
/// passthrough, counted) or the read failed (a host error, counted).
pub(super) fn routed(
    declared: Option<&mut Declared>,
    host: &mut dyn Host,
    metrics: &Metrics,
) -> Option<Routed> {
    let Some(d) = declared.filter(|d| !d.refuted) else {
        return request_cluster_name(host, metrics).map(Routed::Read);
    };
    if !d.check_due {
        return Some(Routed::Declared);
    }
    let name = request_cluster_name(host, metrics)?;
    d.check_due = false;
    if name == d.name {
        return Some(Routed::Declared);
    }
    d.refuted = true;
    host.log(
        LogLevel::Error,
        &format!(
            "locality-failover: inventory.cluster declares {:?} but a request went to {name:?}: the declaration is dropped, every request is asked its cluster from now on",
            d.name
        ),
    );
    metrics.inc(host, Metric::ConfigErrors);
    Some(Routed::Read(name))
}
