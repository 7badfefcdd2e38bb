//! Readable examples: the files in `envoy/*.yaml` at the repository root.

use super::*;

/// One example file: its name in the `envoy/` directory and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExampleFile {
    pub name: String,
    pub text: String,
}

/// Where the examples expect the built filter (relative to the repository root).
pub const EXAMPLE_WASM: &str = "build/locality_failover.wasm";
/// Directory of the examples, relative to the repository root (their
/// xDS files are there too, and it is their watched directory).
pub const EXAMPLE_DIR: &str = "envoy";

pub(super) fn replace_strings(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_strings(x, from, to)),
        Value::Object(m) => m.values_mut().for_each(|x| replace_strings(x, from, to)),
        _ => {}
    }
}

pub(super) fn example_endpoints() -> Vec<Endpoint> {
    let ep = |name: &str, last: u8, region: &str, zone: &str, priority: u32| {
        Endpoint::new(name, SocketAddr::from(([127, 0, 0, last], 8080)))
            .with_label(LABEL_NETWORK, "net-1")
            .with_label(LABEL_REGION, region)
            .with_label(LABEL_ZONE, zone)
            .with_priority(priority)
    };
    vec![
        ep("pod-a", 2, "us-east-1", "us-east-1a", 0).with_backend("svc-us-east-1a"),
        ep("pod-b", 3, "us-east-1", "us-east-1b", 1).with_backend("svc-us-east-1b"),
        ep("pod-c", 4, "us-west-2", "us-west-2a", 2).with_backend("svc-us-west-2a"),
    ]
}

pub(super) fn example_node() -> Node {
    let labels = [
        (LABEL_NETWORK, "net-1"),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Node {
        id: "waypoint-example".into(),
        cluster: "waypoint".into(),
        labels,
    }
}

pub(super) fn example_frontend() -> Frontend {
    Frontend {
        listener_port: 10000,
        admin_port: 9901,
        ..Frontend::default()
    }
}

/// One example: a bootstrap and its xDS file, as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleConfig {
    /// `override-host`, `original-dst`, `route-header`, `native-eds`.
    pub mode: String,
    description: String,
    wasm: bool,
    pub bootstrap: Value,
    /// `<mode>.cds.yaml` or `<mode>.eds.yaml`.
    pub xds_file: String,
    /// The xDS file's `DiscoveryResponse`.
    pub xds: Value,
}

impl ExampleConfig {
    /// `<mode>.yaml` and the xDS file, rendered as commented YAML.
    pub fn files(&self) -> Vec<ExampleFile> {
        let xds_comment = if self.xds_file.contains(".cds.") {
            format!(
                "# CDS file of {}.yaml (a DiscoveryResponse). Envoy reloads it when it is\n\
                 # replaced by a rename inside the watched directory.\n",
                self.mode
            )
        } else {
            format!(
                "# EDS file of {}.yaml (a DiscoveryResponse): one LocalityLbEndpoints\n\
                 # per (priority, locality). Envoy reloads it when it is replaced by a\n\
                 # rename inside the watched directory.\n",
                self.mode
            )
        };
        vec![
            ExampleFile {
                name: format!("{}.yaml", self.mode),
                text: example_header(&self.mode, &self.description, &self.xds_file, self.wasm)
                    + &to_yaml(&self.bootstrap),
            },
            ExampleFile {
                name: self.xds_file.clone(),
                text: xds_comment + &to_yaml(&self.xds),
            },
        ]
    }

    /// The same configuration with the xDS file's resources inlined as
    /// static resources (`envoy --mode validate` does not read xDS files,
    /// this lets it check the clusters too).
    pub fn with_static_resources(&self) -> Value {
        let mut b = self.bootstrap.clone();
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Value::Object(m) = &mut v {
                m.remove("@type");
            }
            v
        };
        let resources: Vec<Value> = self
            .xds
            .get("resources")
            .and_then(Value::as_array)
            .map(|r| r.iter().map(strip).collect())
            .unwrap_or_default();
        if let Value::Object(m) = &mut b {
            m.remove("dynamic_resources");
        }
        if self.xds_file.contains(".cds.") {
            b["static_resources"]["clusters"] = Value::Array(resources);
        } else if let Some(Value::Array(clusters)) = b.pointer_mut("/static_resources/clusters") {
            for c in clusters.iter_mut() {
                if let (Value::Object(m), Some(cla)) = (c, resources.first()) {
                    m.remove("eds_cluster_config");
                    m.insert("type".into(), json!("STATIC"));
                    m.insert("load_assignment".into(), cla.clone());
                }
            }
        }
        b
    }
}

/// The example configurations: for each of `override-host`, `original-dst`,
/// `route-header` and `native-eds`, a bootstrap and its xDS file, with the
/// placeholders of [`EXAMPLE_WASM`], [`EXAMPLE_DIR`], 127.0.0.2-4:8080,
/// listener port 10000, admin port 9901, access log to /dev/stdout.
// Long on purpose: the four examples side by side, each a short block, so
// their differences read at a glance.
pub fn example_configs() -> Vec<ExampleConfig> {
    let placeholder = Layout::new("/LAYOUT");
    let fix = |v: &mut Value, xds_file: &str| {
        let xds_path = format!("{EXAMPLE_DIR}/{xds_file}");
        replace_strings(v, &placeholder.cds().to_string_lossy(), &xds_path);
        replace_strings(v, &placeholder.eds().to_string_lossy(), &xds_path);
        replace_strings(v, &placeholder.xds_dir().to_string_lossy(), EXAMPLE_DIR);
        replace_strings(
            v,
            &placeholder.access_log().to_string_lossy(),
            "/dev/stdout",
        );
        replace_strings(v, "/WASM", EXAMPLE_WASM);
    };
    let mut out = Vec::new();
    let steerings = [
        (
            "override-host",
            Steering::override_host(),
            "override_host load balancing policy reading the header",
        ),
        (
            "original-dst",
            Steering::original_dst(),
            "ORIGINAL_DST cluster reading the header",
        ),
        (
            "route-header",
            Steering::route_header(),
            "route cluster_header, one cluster per backend",
        ),
    ];
    for (mode, steering, what) in steerings {
        let mut cfg = FilterModeConfig::new(steering.clone(), example_endpoints());
        let mut plugin_config = json!({
            "trafficDistribution": "PreferClose",
            "steering": { "mode": mode, "header": steering.header() },
        });
        if mode != "route-header" {
            // The one route goes to one cluster, which sets
            // include_attempt_count_in_response: both declarations hold
            // and save two property reads per request.
            plugin_config["inventory"] = json!({ "cluster": cfg.cluster_name });
            plugin_config["steering"]["attemptCount"] = json!("responseHeader");
        }
        let plugin_config = plugin_config.to_string();
        cfg.node = example_node();
        cfg.wasm = Some(WasmFilter::new("/WASM", plugin_config));
        cfg.retry = Some(RetryPolicy::new(2, "connect-failure"));
        cfg.revision = "1".into();
        cfg.frontend = example_frontend();
        let xds_file = format!("{mode}.cds.yaml");
        let mut bootstrap = cfg.bootstrap(&placeholder);
        fix(&mut bootstrap, &xds_file);
        out.push(ExampleConfig {
            mode: mode.into(),
            description: what.into(),
            wasm: true,
            bootstrap,
            xds_file,
            xds: cds_file("1", &cfg.clusters()),
        });
    }
    let mut native = NativeModeConfig::new(example_endpoints());
    native.node = example_node();
    native.retry = Some(RetryPolicy {
        previous_hosts: true,
        ..RetryPolicy::new(2, "connect-failure,5xx")
    });
    native.healthy_panic_threshold = Some(0.0);
    native.outlier = Some(OutlierDetection {
        consecutive_5xx: 2,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    });
    native.frontend = example_frontend();
    let xds_file = "native-eds.eds.yaml".to_string();
    let mut bootstrap = native.bootstrap(&placeholder);
    fix(&mut bootstrap, &xds_file);
    out.push(ExampleConfig {
        mode: "native-eds".into(),
        description:
            "no filter: Envoy's own priorities, round robin and outlier detection on an EDS cluster"
                .into(),
        wasm: false,
        bootstrap,
        xds_file,
        xds: eds_file("1", &native.load_assignment()),
    });
    out
}

/// Every example file ([`ExampleConfig::files`] of [`example_configs`]).
pub fn example_files() -> Vec<ExampleFile> {
    example_configs()
        .iter()
        .flat_map(ExampleConfig::files)
        .collect()
}

pub(super) fn example_header(mode: &str, what: &str, xds_file: &str, wasm: bool) -> String {
    let mut h = format!(
        "# Example Envoy bootstrap, {mode} mode: {what}.\n\
         # Generated by host_harness::envoy::config::example_files() (the same\n\
         # generators the scenario runner uses); regenerate with\n\
         #   LF_WRITE_EXAMPLES=1 cargo test -p host-harness --test envoy_blocks examples\n\
         # Run from the repository root:  envoy -c {EXAMPLE_DIR}/{mode}.yaml\n\
         # Placeholders (the runner writes real values into a temp dir):\n"
    );
    if wasm {
        h.push_str(&format!(
            "#   {EXAMPLE_WASM}  the built filter\n\
             #     (cargo build --profile wasm --target wasm32-wasip1 -p locality-failover)\n"
        ));
    }
    h.push_str(&format!(
        "#   {EXAMPLE_DIR}/{xds_file}  xDS file (path_config_source), watched\n\
         #     directory {EXAMPLE_DIR}\n\
         #   127.0.0.2-4:8080  the endpoints pod-a, pod-b, pod-c\n\
         #   listener 127.0.0.1:10000, admin 127.0.0.1:9901 (the runner uses port 0)\n\
         #   /dev/stdout  access log: U line per upstream attempt, D line per request\n"
    ));
    h
}
