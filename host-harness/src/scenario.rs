//! The scenario format of `shared/scenarios/README.md`: a client, an
//! endpoint inventory, a filter configuration and steps. Parsing checks
//! every field and names the file and field it refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use locality_failover::config::duration::parse_duration;
use locality_failover::config::Settings;

use crate::sim::Behavior;
use serde::Deserialize;

/// A scenario file that cannot be played (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub client_labels: BTreeMap<String, String>,
    pub endpoints: Vec<ScenarioEndpoint>,
    /// `trafficDistribution` / `trafficPolicy` (and any other plugin
    /// configuration field, e.g. `steering`), as given.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// [`Self::plugin_config`] as the filter parses it (once, here).
    pub settings: Settings,
    pub workers: usize,
    pub retries: Option<Retries>,
    pub seed: u64,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioEndpoint {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
}

impl ScenarioEndpoint {
    /// The endpoint as an entry of the filter's inventory.
    pub fn spec(&self) -> locality_failover::inventory::EndpointSpec {
        locality_failover::inventory::EndpointSpec {
            address: self.address.clone(),
            name: Some(self.name.clone()),
            labels: self.labels.clone(),
            weight: Some(self.weight),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    pub attempts: u32,
    pub retry_on: Vec<String>,
}

/// What a step's `set` does to one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Its upstream answers this way from now on (`healthy`, `refused`,
    /// `http-NNN`); its place in the inventory does not change.
    Answers(Behavior),
    /// Out of the inventory and the cluster.
    Removed,
    /// Back in the inventory and the cluster, answering healthy.
    Present,
}

impl EndpointState {
    /// How the endpoint's upstream answers from now on (`None`: unchanged).
    pub fn behavior(self) -> Option<Behavior> {
        match self {
            EndpointState::Answers(b) => Some(b),
            EndpointState::Present => Some(Behavior::Healthy),
            EndpointState::Removed => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub set: Vec<(String, EndpointState)>,
    pub advance: Duration,
    pub requests: u32,
    pub expect: Option<Expect>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub by_endpoint: BTreeMap<String, u64>,
    pub client_errors: Option<u64>,
    pub tolerance: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    client: RawClient,
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    config: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    retries: Option<RawRetries>,
    #[serde(default)]
    seed: Option<u64>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClient {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRetries {
    attempts: u32,
    #[serde(default)]
    retry_on: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    advance: Option<String>,
    #[serde(default)]
    requests: u32,
    #[serde(default)]
    expect: Option<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    by_endpoint: BTreeMap<String, u64>,
    #[serde(default)]
    client_errors: Option<u64>,
    #[serde(default)]
    tolerance: Option<u64>,
}

/// Most requests one step may send (keeps every mode bounded).
pub const MAX_REQUESTS_PER_STEP: u32 = 100_000;

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses and validates a scenario; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let at = Refuse { file };
        let raw: RawScenario = serde_json::from_str(text).map_err(|e| {
            at.field(
                "(json)",
                format!("{e} (line {}, column {})", e.line(), e.column()),
            )
        })?;
        let endpoints = parse_endpoints(&at, raw.endpoints)?;
        let names: BTreeSet<String> = endpoints.iter().map(|e| e.name.clone()).collect();
        let workers = raw.workers.unwrap_or(1);
        if !(1..=64).contains(&workers) {
            return Err(at.field("workers", format!("{workers} is not in 1..64")));
        }
        let retries = raw.retries.map(|r| parse_retries(&at, r)).transpose()?;
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| parse_step(&at, i, s, &names))
            .collect::<Result<Vec<Step>, ScenarioError>>()?;
        let config = raw.config;
        if route_header(&config) {
            check_route_header_steps(&at, &steps)?;
        }
        // The filter must accept the configuration: validate it now so a bad
        // one is a file error (exit 2), not a failed expectation.
        let plugin_config = plugin_config_of(&config, &endpoints);
        let settings = Settings::from_bytes(plugin_config.to_string().as_bytes())
            .map_err(|e| at.field("config", e.to_string()))?;
        Ok(Scenario {
            name: raw.name,
            client_labels: raw.client.labels,
            endpoints,
            config,
            settings,
            workers,
            retries,
            seed: raw.seed.unwrap_or(1),
            steps,
        })
    }

    /// Sets one field of the scenario's `config` and parses the plugin
    /// configuration again, so [`Self::settings`] follows.
    pub fn set_config(
        &mut self,
        field: &str,
        value: serde_json::Value,
    ) -> Result<(), locality_failover::config::ConfigError> {
        self.config.insert(field.to_string(), value);
        self.settings = Settings::from_bytes(self.plugin_config().to_string().as_bytes())?;
        Ok(())
    }

    /// Route-header steering chooses the route, so its inventory must come
    /// from the configuration instead of the cluster metadata.
    pub fn route_header(&self) -> bool {
        route_header(&self.config)
    }

    /// The plugin configuration the filter gets for this scenario: its
    /// `config`, plus an inline inventory (backend = endpoint name) in
    /// route-header mode.
    pub fn plugin_config(&self) -> serde_json::Value {
        plugin_config_of(&self.config, &self.endpoints)
    }

    /// Plays a step's `set`: `behave` gets each endpoint's new state (the
    /// mode sets its upstream), and `removed`/`present` update `present`,
    /// the endpoints in the inventory. Returns whether the inventory changed,
    /// so the mode publishes it again.
    pub fn apply_set(
        &self,
        present: &mut std::collections::BTreeSet<String>,
        set: &[(String, EndpointState)],
        mut behave: impl FnMut(&ScenarioEndpoint, EndpointState) -> crate::error::Result<()>,
    ) -> crate::error::Result<bool> {
        let mut changed = false;
        for (name, state) in set {
            let endpoint = self
                .endpoint(name)
                .ok_or_else(|| crate::error::HarnessError::unknown("endpoint", name))?;
            behave(endpoint, *state)?;
            match state {
                EndpointState::Removed => changed |= present.remove(name),
                EndpointState::Present => changed |= present.insert(name.clone()),
                _ => {}
            }
        }
        Ok(changed)
    }

    pub fn endpoint(&self, name: &str) -> Option<&ScenarioEndpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

fn parse_state(s: &str) -> Option<EndpointState> {
    match s {
        "healthy" => Some(EndpointState::Answers(Behavior::Healthy)),
        "refused" => Some(EndpointState::Answers(Behavior::Refused)),
        "removed" => Some(EndpointState::Removed),
        "present" => Some(EndpointState::Present),
        _ => {
            let code: u16 = s.strip_prefix("http-")?.parse().ok()?;
            (100..600)
                .contains(&code)
                .then_some(EndpointState::Answers(Behavior::Http(code)))
        }
    }
}

/// The plugin configuration a scenario gives the filter: its `config`,
/// plus (unless the config sets them) the proxy's locality and, when
/// `inline` endpoints are given, an inventory from configuration.
pub fn plugin_config_for(
    config: &serde_json::Map<String, serde_json::Value>,
    inline: &[serde_json::Value],
    locality_labels: &BTreeMap<String, String>,
) -> serde_json::Value {
    let mut cfg = config.clone();
    if !inline.is_empty() && !cfg.contains_key("inventory") {
        cfg.insert(
            "inventory".into(),
            serde_json::json!({"source": "config", "endpoints": inline}),
        );
    }
    if !locality_labels.is_empty() && !cfg.contains_key("locality") {
        cfg.insert(
            "locality".into(),
            serde_json::json!({"labels": locality_labels}),
        );
    }
    serde_json::Value::Object(cfg)
}

/// Builds the errors of one scenario file.
struct Refuse<'a> {
    file: &'a str,
}

impl Refuse<'_> {
    fn field(&self, field: &str, message: String) -> ScenarioError {
        ScenarioError {
            file: self.file.to_string(),
            field: field.to_string(),
            message,
        }
    }
}

fn route_header(config: &serde_json::Map<String, serde_json::Value>) -> bool {
    config
        .get("steering")
        .and_then(|s| s.get("mode"))
        .is_some_and(|m| m == "route-header")
}

/// The scenario's plugin configuration: `config`, plus an inline inventory
/// (backend = endpoint name) in route-header mode.
fn plugin_config_of(
    config: &serde_json::Map<String, serde_json::Value>,
    endpoints: &[ScenarioEndpoint],
) -> serde_json::Value {
    let inline: Vec<serde_json::Value> = if route_header(config) {
        endpoints
            .iter()
            .map(|e| serde_json::json!({"address": e.address, "name": e.name, "labels": e.labels, "weight": e.weight, "backend": e.name}))
            .collect()
    } else {
        vec![]
    };
    plugin_config_for(config, &inline, &BTreeMap::new())
}

fn parse_endpoints(
    at: &Refuse,
    raw: Vec<RawEndpoint>,
) -> Result<Vec<ScenarioEndpoint>, ScenarioError> {
    if raw.is_empty() {
        return Err(at.field("endpoints", "at least one endpoint is required".into()));
    }
    let mut names = BTreeSet::new();
    let mut endpoints = Vec::new();
    for (i, e) in raw.into_iter().enumerate() {
        if !names.insert(e.name.clone()) {
            return Err(at.field(
                &format!("endpoints[{i}].name"),
                format!("{:?} is used twice", e.name),
            ));
        }
        if e.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(at.field(
                &format!("endpoints[{i}].address"),
                format!("{:?} is not ip:port", e.address),
            ));
        }
        let weight = e.weight.unwrap_or(1);
        if weight == 0 {
            return Err(at.field(
                &format!("endpoints[{i}].weight"),
                "must be at least 1".into(),
            ));
        }
        endpoints.push(ScenarioEndpoint {
            name: e.name,
            address: e.address,
            labels: e.labels,
            weight,
        });
    }
    Ok(endpoints)
}

/// The retry conditions this runner plays (in every mode).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "refused-stream",
    "retriable-status-codes",
];

fn parse_retries(at: &Refuse, r: RawRetries) -> Result<Retries, ScenarioError> {
    if r.attempts > 10 {
        return Err(at.field(
            "retries.attempts",
            format!("{} is more than 10", r.attempts),
        ));
    }
    let retry_on: Vec<String> = r
        .retry_on
        .unwrap_or_else(|| "5xx,connect-failure".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(cond) = retry_on.iter().find(|c| !RETRY_ON.contains(&c.as_str())) {
        return Err(at.field(
            "retries.retryOn",
            format!("{cond:?} is not a retry condition this runner plays"),
        ));
    }
    Ok(Retries {
        attempts: r.attempts,
        retry_on,
    })
}

fn parse_step(
    at: &Refuse,
    i: usize,
    s: RawStep,
    names: &BTreeSet<String>,
) -> Result<Step, ScenarioError> {
    let mut set = Vec::new();
    for (name, state) in &s.set {
        if !names.contains(name) {
            return Err(at.field(
                &format!("steps[{i}].set.{name}"),
                "no endpoint has this name".into(),
            ));
        }
        let st = parse_state(state).ok_or_else(|| {
            at.field(
                &format!("steps[{i}].set.{name}"),
                format!("{state:?} is not healthy, refused, http-NNN, removed or present"),
            )
        })?;
        set.push((name.clone(), st));
    }
    let advance = match &s.advance {
        None => Duration::ZERO,
        Some(a) => parse_duration(a)
            .map_err(|e| at.field(&format!("steps[{i}].advance"), format!("{a:?}: {e}")))?,
    };
    if s.requests > MAX_REQUESTS_PER_STEP {
        return Err(at.field(
            &format!("steps[{i}].requests"),
            format!("{} is more than {MAX_REQUESTS_PER_STEP}", s.requests),
        ));
    }
    let expect = s
        .expect
        .map(|x| parse_expect(at, i, x, names))
        .transpose()?;
    Ok(Step {
        name: s.name,
        set,
        advance,
        requests: s.requests,
        expect,
    })
}

fn parse_expect(
    at: &Refuse,
    i: usize,
    x: RawExpect,
    names: &BTreeSet<String>,
) -> Result<Expect, ScenarioError> {
    if let Some(name) = x.by_endpoint.keys().find(|n| !names.contains(*n)) {
        return Err(at.field(
            &format!("steps[{i}].expect.by_endpoint.{name}"),
            "no endpoint has this name".into(),
        ));
    }
    Ok(Expect {
        by_endpoint: x.by_endpoint,
        client_errors: x.client_errors,
        tolerance: x.tolerance.unwrap_or(0),
    })
}

/// Route-header steering takes its inventory from the configuration, so a
/// step cannot remove or add endpoints.
fn check_route_header_steps(at: &Refuse, steps: &[Step]) -> Result<(), ScenarioError> {
    for (i, step) in steps.iter().enumerate() {
        if let Some((name, _)) = step
            .set
            .iter()
            .find(|(_, st)| matches!(st, EndpointState::Removed | EndpointState::Present))
        {
            return Err(at.field(
                &format!("steps[{i}].set.{name}"),
                "removed/present change the inventory in cluster metadata; route-header steering takes its inventory from the configuration".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"name":"x","endpoints":[{"name":"a","address":"10.0.0.1:80"}],
        "steps":[{"name":"s","set":{"a":"http-503"},"advance":"1m","requests":2,
        "expect":{"by_endpoint":{"a":2},"client_errors":2}}]}"#;

    #[test]
    fn parses_a_minimal_scenario() {
        let s = Scenario::parse("f.json", OK).unwrap();
        assert_eq!(s.workers, 1);
        assert_eq!(
            s.steps[0].set,
            vec![("a".to_string(), EndpointState::Answers(Behavior::Http(503)))]
        );
        assert_eq!(s.steps[0].advance, Duration::from_secs(60));
    }

    #[test]
    fn names_file_and_field() {
        let bad = OK.replace("http-503", "sleepy");
        let e = Scenario::parse("f.json", &bad).unwrap_err();
        assert_eq!(e.file, "f.json");
        assert_eq!(e.field, "steps[0].set.a");
        let bad = OK.replace("\"a\":2", "\"zz\":2");
        assert_eq!(
            Scenario::parse("f.json", &bad).unwrap_err().field,
            "steps[0].expect.by_endpoint.zz"
        );
        let bad = OK.replace("10.0.0.1:80", "nowhere");
        assert_eq!(
            Scenario::parse("f.json", &bad).unwrap_err().field,
            "endpoints[0].address"
        );
        let bad = OK.replace(
            "\"steps\"",
            "\"config\":{\"trafficDistribution\":\"Nearby\"},\"steps\"",
        );
        assert_eq!(Scenario::parse("f.json", &bad).unwrap_err().field, "config");
        let bad = OK.replace("\"1m\"", "\"1 minute\"");
        assert_eq!(
            Scenario::parse("f.json", &bad).unwrap_err().field,
            "steps[0].advance"
        );
        assert_eq!(Scenario::parse("f.json", "{").unwrap_err().field, "(json)");
    }

    #[test]
    fn seed_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/scenarios");
        let entries = std::fs::read_dir(&dir).expect("shared/scenarios beside the repository");
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                Scenario::load(&e.path()).unwrap();
            }
        }
    }
}
