//! The `lint` command.

use super::*;

struct Lint {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lint(config: &str) -> Lint {
    let dir = TempDir::new("lint").expect("temp dir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .arg("lint")
        .arg(&path)
        .output()
        .expect("run host-harness lint");
    Lint {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn warnings(l: &Lint) -> Vec<&str> {
    l.stdout
        .lines()
        .filter(|line| line.contains(": warning: "))
        .collect()
}

fn four_pods() -> Value {
    json!([
        {"address": "10.10.0.15:8080", "name": "in-ambient-7d8f9b6c54-abc12"},
        {"address": "10.10.1.8:8080", "name": "in-ambient-7d8f9b6c54-def34"},
        {"address": "10.20.0.7:8080", "name": "in-ambient-8e9f0c7d65-xyz98"},
        {"address": "10.20.1.4:8080", "name": "in-ambient-8e9f0c7d65-uvw56"}
    ])
}

#[test]
fn lint_warns_about_the_guides_zone_region_order() {
    let l = lint(&json!({"trafficPolicy": guide_traffic_policy(&GUIDE_ORDER)}).to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("trafficPolicy.loadBalancer.localityLbSetting.failoverPriority"),
        "{w:?}"
    );
    assert!(
        w[0].contains("topology.kubernetes.io/zone comes before topology.kubernetes.io/region"),
        "{w:?}"
    );
    assert!(
        w[0].contains("[topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone]"),
        "suggests the fix: {w:?}"
    );

    let fixed = lint(&json!({"trafficPolicy": guide_traffic_policy(&FIXED_ORDER)}).to_string());
    assert_eq!(fixed.code, 0, "{}{}", fixed.stdout, fixed.stderr);
    assert!(
        fixed.stdout.trim_end().ends_with(": ok"),
        "{}",
        fixed.stdout
    );
}

#[test]
fn lint_warns_about_failover_without_outlier_detection() {
    let config = json!({"trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {
        "enabled": true, "failoverPriority": FIXED_ORDER}}}});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("trafficPolicy.outlierDetection: missing"),
        "{w:?}"
    );
    assert!(w[0].contains("only with outlierDetection"), "{w:?}");
}

#[test]
fn lint_warns_when_max_ejection_percent_cannot_eject() {
    // 4 endpoints: one ejection is 25%; 20% never lets it through.
    let mut tp = guide_traffic_policy(&FIXED_ORDER);
    tp["outlierDetection"]["maxEjectionPercent"] = json!(20);
    let config =
        json!({"trafficPolicy": tp, "inventory": {"source": "config", "endpoints": four_pods()}});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{w:?}"
    );
    assert!(w[0].contains("20% with 4 endpoints"), "{w:?}");
    assert!(w[0].contains("raise it to at least 25"), "{w:?}");

    // Istio's default (10%) with the same inventory.
    tp["outlierDetection"]
        .as_object_mut()
        .expect("od")
        .remove("maxEjectionPercent");
    let config =
        json!({"trafficPolicy": tp, "inventory": {"source": "config", "endpoints": four_pods()}});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1);
    assert!(
        warnings(&l)
            .iter()
            .any(|w| w.contains("10% with 4 endpoints")),
        "{}",
        l.stdout
    );

    // The guide's 50% is enough for 4.
    let config = json!({"trafficPolicy": guide_traffic_policy(&FIXED_ORDER),
        "inventory": {"source": "config", "endpoints": four_pods()}});
    assert_eq!(lint(&config.to_string()).code, 0);
}

#[test]
fn lint_warns_about_unknown_fields() {
    let mut tp = guide_traffic_policy(&FIXED_ORDER);
    tp["outlierDetection"]["baseEjectionTim"] = json!("3m");
    let config = json!({"trafficPolicy": tp, "trafficDistrbution": "PreferClose"});
    let l = lint(&config.to_string());
    assert_eq!(l.code, 1, "{}{}", l.stdout, l.stderr);
    let w = warnings(&l);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("trafficPolicy.outlierDetection.baseEjectionTim: unknown field")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("trafficDistrbution: unknown field")),
        "{w:?}"
    );
}

#[test]
fn lint_refuses_invalid_configurations() {
    let mut tp = guide_traffic_policy(&FIXED_ORDER);
    tp["outlierDetection"]["maxEjectionPercent"] = json!(150);
    let l = lint(&json!({"trafficPolicy": tp}).to_string());
    assert_eq!(l.code, 2, "{}{}", l.stdout, l.stderr);
    assert!(
        l.stderr
            .contains("trafficPolicy.outlierDetection.maxEjectionPercent"),
        "{}",
        l.stderr
    );
    assert!(warnings(&l).is_empty());

    let l = lint("trafficPolicy: {}");
    assert_eq!(l.code, 2);
    assert!(l.stderr.contains("not JSON"), "{}", l.stderr);
}

/// The pluginConfigs shipped in envoy/istio/, through the CLI as a user
/// would check them: clean.
#[test]
fn lint_accepts_the_shipped_plugin_configs() {
    for file in [
        "envoy/istio/route-header.yaml",
        "envoy/istio/override-host.yaml",
        "envoy/istio/waypoint.yaml",
    ] {
        let docs = yaml_docs(file);
        let plugin = kind(&docs, "WasmPlugin")[0];
        let config = plugin.pointer("/spec/pluginConfig").expect("pluginConfig");
        let l = lint(&config.to_string());
        assert_eq!(l.code, 0, "{file}: {}{}", l.stdout, l.stderr);
    }
}
