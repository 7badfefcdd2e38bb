//! A host for `FilterRoot` whose own storage is not charged to the filter.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use crate::alloc::host_side;
use crate::fixtures::{
    client_labels, inventory_json, plugin_config, synthetic_address, synthetic_specs,
};
use locality_failover::config::Settings;
use locality_failover::filter::{FilterRoot, RequestState};
use locality_failover::host::{Host, HostError, LogLevel, MetricKind};

pub(crate) struct BenchHost {
    pub(crate) props: HashMap<String, Vec<u8>>,
    pub(crate) shared: HashMap<String, (Vec<u8>, u32)>,
    pub(crate) next_cas: u32,
    pub(crate) config: Vec<u8>,
    pub(crate) now: Cell<u64>,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) response: HashMap<String, String>,
    pub(crate) metrics: Vec<(String, i64)>,
    /// Host calls and the buffers they handed into the VM.
    pub(crate) tally: Tally,
    /// Clock advance per answered request, ns.
    pub(crate) spacing: u64,
}

/// What the filter asked of the host: every call, and every buffer the
/// host handed into the VM (each one costs Envoy a `proxy_on_memory_allocate`
/// round trip; see ../shared/spec/perf-profile.md).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) calls: Cell<u64>,
    pub(crate) property_buffers: Cell<u64>,
    pub(crate) shared_buffers: Cell<u64>,
    pub(crate) header_buffers: Cell<u64>,
}

impl Tally {
    fn call(&self) {
        self.calls.set(self.calls.get() + 1);
    }

    /// Counts a call that returned `found`, and its buffer if there is one.
    fn returned<T>(&self, counter: &Cell<u64>, found: Option<T>) -> Option<T> {
        self.call();
        if found.is_some() {
            counter.set(counter.get() + 1);
        }
        found
    }

    pub(crate) fn snapshot(&self) -> [u64; 4] {
        [
            self.calls.get(),
            self.property_buffers.get(),
            self.shared_buffers.get(),
            self.header_buffers.get(),
        ]
    }
}

pub(crate) fn key(path: &[&str]) -> String {
    path.join("\0")
}

impl BenchHost {
    pub(crate) fn new(config: Vec<u8>) -> BenchHost {
        let _h = host_side();
        let mut props = HashMap::new();
        for (k, v) in client_labels() {
            props.insert(
                key(&["xds", "node", "metadata", "LABELS", &k]),
                v.clone().into_bytes(),
            );
        }
        props.insert(
            key(&["xds", "node", "locality", "region"]),
            b"us-east-1".to_vec(),
        );
        props.insert(
            key(&["xds", "node", "locality", "zone"]),
            b"us-east-1a".to_vec(),
        );
        props.insert(key(&["xds", "cluster_name"]), b"svc".to_vec());
        BenchHost {
            props,
            shared: HashMap::new(),
            next_cas: 0,
            config,
            now: Cell::new(1_700_000_000_000_000_000),
            headers: HashMap::new(),
            response: HashMap::new(),
            metrics: Vec::new(),
            tally: Tally::default(),
            spacing: 100_000,
        }
    }

    /// Puts an inventory of `n` synthetic endpoints in the cluster metadata
    /// (weights differ by `salt`, so each revision is a real change).
    pub(crate) fn publish_inventory(&mut self, n: usize, revision: &str, salt: usize) {
        let _h = host_side();
        let mut specs = synthetic_specs(n);
        if let Some(s) = specs.get_mut(salt % n.max(1)) {
            s.weight = Some(1 + (salt % 3) as u32);
        }
        let bytes = locality_failover::metadata::metadata_for(
            "locality-failover",
            &inventory_json(&specs, revision),
        );
        self.props.insert(key(&["xds", "cluster_metadata"]), bytes);
        self.props.insert(
            key(&[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                "locality-failover",
                "revision",
            ]),
            revision.as_bytes().to_vec(),
        );
    }

    /// The properties `on_log` reads, as Envoy sets them for an answer.
    pub(crate) fn answer(&mut self, code: i64, upstream: Option<&str>) {
        let _h = host_side();
        self.props
            .insert(key(&["response", "code"]), code.to_le_bytes().to_vec());
        self.response.insert(":status".into(), code.to_string());
        // As a route with `include_attempt_count_in_response` answers.
        self.response
            .insert("x-envoy-attempt-count".into(), "1".into());
        self.props
            .insert(key(&["response", "flags"]), 0u64.to_le_bytes().to_vec());
        if let Some(u) = upstream {
            self.props
                .insert(key(&["upstream", "address"]), u.as_bytes().to_vec());
        }
        self.props.insert(
            key(&["upstream", "request_attempt_count"]),
            1u64.to_le_bytes().to_vec(),
        );
        self.now.set(self.now.get() + self.spacing);
    }
}

impl Host for BenchHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let found = {
            let _h = host_side();
            self.props.get(&key(path))
        };
        // Envoy copies a property into the VM's memory: charged to the filter.
        Ok(self
            .tally
            .returned(&self.tally.property_buffers, found.cloned()))
    }
    fn response_header(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let found = {
            let _h = host_side();
            self.response.get(name)
        };
        let found = found.map(|v| v.as_bytes().to_vec());
        Ok(self.tally.returned(&self.tally.header_buffers, found))
    }
    fn response_header_pairs(&self) -> Result<Option<Vec<u8>>, HostError> {
        let found = {
            let _h = host_side();
            locality_failover::host::decode::encode_header_pairs(
                self.response.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
        };
        Ok(self.tally.returned(&self.tally.header_buffers, Some(found)))
    }
    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        let found = {
            let _h = host_side();
            self.headers.get(name)
        };
        Ok(self
            .tally
            .returned(&self.tally.header_buffers, found.cloned()))
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        self.tally.call();
        let _h = host_side();
        match value {
            Some(v) => self.headers.insert(name.to_string(), v.to_string()),
            None => self.headers.remove(name),
        };
        Ok(())
    }
    fn send_local_reply(&mut self, _status: u32, _body: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        let found = {
            let _h = host_side();
            self.shared.get(key)
        };
        let found = self.tally.returned(&self.tally.shared_buffers, found);
        Ok(match found {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn set_shared_data(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), HostError> {
        self.tally.call();
        let _h = host_side();
        if let (Some(c), Some((_, current))) = (cas, self.shared.get(key)) {
            if c != *current {
                return Err(HostError::CasMismatch);
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.shared
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
    fn now_nanos(&self) -> u64 {
        self.tally.call();
        self.now.get()
    }
    fn set_tick_period(&mut self, _period: Duration) -> Result<(), HostError> {
        Ok(())
    }
    fn define_metric(&mut self, _kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let _h = host_side();
        self.metrics.push((name.to_string(), 0));
        Ok((self.metrics.len() - 1) as u32)
    }
    fn increment_metric(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        self.tally.call();
        if let Some(m) = self.metrics.get_mut(id as usize) {
            m.1 += by;
        }
        Ok(())
    }
    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        if let Some(m) = self.metrics.get_mut(id as usize) {
            m.1 = value as i64;
        }
        Ok(())
    }
    fn log(&self, level: LogLevel, message: &str) {
        if level >= LogLevel::Warn {
            let _h = host_side();
            eprintln!("bench: filter log: {message}");
        }
    }
    fn plugin_configuration(&self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(Some(self.config.clone()))
    }
}

/// The address a request was steered to first (the simulated host's work:
/// not charged to the filter).
pub(crate) fn served(root: &FilterRoot, state: &RequestState) -> Option<String> {
    let _h = host_side();
    root.request_addresses(state).into_iter().next()
}

/// One request through the filter as Envoy drives it: request headers,
/// the upstream's answer `code`, response headers, log.
pub(crate) fn one_request(host: &mut BenchHost, root: &mut FilterRoot, code: i64) -> bool {
    let Some(mut state) = root.on_request_headers(host) else {
        return false;
    };
    // Route-header mode writes a backend: Envoy picks an endpoint in it.
    let first = served(root, &state).unwrap_or_else(|| synthetic_address(0));
    host.answer(code, Some(&first));
    root.on_response_headers(host, Some(&mut state));
    root.on_log(host, &state);
    true
}

/// A configured FilterRoot whose inventory (`n` endpoints, revision "1") is loaded.
pub(crate) fn filter_with_inventory(n: usize, settings: &Settings) -> (BenchHost, FilterRoot) {
    let _ = settings;
    let mut host = BenchHost::new(plugin_config("ROUND_ROBIN").to_string().into_bytes());
    host.publish_inventory(n, "1", 0);
    let mut root = FilterRoot::new(7);
    root.on_configure(&mut host);
    if let Some(mut state) = root.on_request_headers(&mut host) {
        let first = served(&root, &state);
        host.answer(200, first.as_deref());
        root.on_response_headers(&mut host, Some(&mut state));
        root.on_log(&mut host, &state);
    }
    (host, root)
}
