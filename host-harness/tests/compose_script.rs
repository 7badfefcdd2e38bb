//! `make compose` (scripts/compose.sh + scripts/compose/steps.sh) against
//! `envoy/docker-compose.yaml`: the script must build the images the file
//! names, check the ports it publishes, tear down the project it declares and
//! act on its pods, or it would test something else than what users run.
//! (Running it needs root and a container engine: `make compose`.)

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose_file() -> Value {
    let text = read("envoy/docker-compose.yaml");
    Value::deserialize(serde_yaml_ng::Deserializer::from_str(&text)).expect("compose YAML")
}

/// The value of a top-level `NAME=value` (or `NAME=(a b c)`) line of a script.
fn shell_var(script: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    script
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.split(" #").next().unwrap_or(v).trim().to_string())
        .unwrap_or_else(|| panic!("no {name}= line"))
}

/// Docker's reference normalisation: `envoyproxy/envoy:t` ->
/// `docker.io/envoyproxy/envoy:t`, `busybox:t` -> `docker.io/library/busybox:t`.
fn normalise(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    if image.contains('/') && (first.contains('.') || first.contains(':')) {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose
        .get("services")
        .and_then(Value::as_object)
        .expect("services")
}

#[test]
fn the_script_builds_exactly_the_images_the_compose_file_names() {
    let compose = compose_file();
    let script = read("scripts/compose.sh");
    let built = [
        shell_var(&script, "ENVOY_IMAGE"),
        shell_var(&script, "ECHO_IMAGE"),
    ];
    for (name, svc) in services(&compose) {
        let image = svc.get("image").and_then(Value::as_str).expect("image");
        assert!(
            built.contains(&normalise(image)),
            "service {name}: image {image} is not one scripts/compose.sh builds ({built:?})"
        );
        assert!(
            svc.get("build").is_none(),
            "{name}: users run public images, not a build"
        );
    }
    assert!(
        script.contains(&format!(
            "ECHO_MODULE=github.com/hashicorp/http-echo@v{}",
            built[1].rsplit(':').next().unwrap_or_default()
        )),
        "http-echo is built from the version of its image tag"
    );
}

#[test]
fn the_script_checks_the_published_ports_and_tears_down_the_declared_project() {
    let compose = compose_file();
    let script = read("scripts/compose.sh");
    let mut published: Vec<String> = Vec::new();
    for svc in services(&compose).values() {
        for p in svc
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = p.as_str().expect("short port syntax");
            let parts: Vec<&str> = p.split(':').collect();
            assert_eq!(parts.len(), 3, "{p}: published on an explicit address");
            assert_eq!(parts[0], "127.0.0.1", "{p}: loopback only");
            published.push(parts[1].to_string());
        }
    }
    let mut checked: Vec<String> = shell_var(&script, "PORTS")
        .trim_matches(|c| c == '(' || c == ')')
        .split_whitespace()
        .map(str::to_string)
        .collect();
    published.sort();
    checked.sort();
    assert_eq!(checked, published, "PORTS in scripts/compose.sh");
    assert_eq!(
        shell_var(&script, "PROJECT"),
        compose.get("name").and_then(Value::as_str).expect("name:"),
        "the project the script tears down is the file's"
    );
}

#[test]
fn the_steps_act_on_the_compose_pods_with_their_own_command() {
    let compose = compose_file();
    let steps = read("scripts/compose/steps.sh");
    let services = services(&compose);
    for var in ["ABC", "DEF", "XYZ", "UVW"] {
        let pod = shell_var(&steps, var);
        let svc = services
            .get(&pod)
            .unwrap_or_else(|| panic!("steps.sh {var}={pod}: no such compose service"));
        let command: Vec<&str> = svc
            .get("command")
            .and_then(Value::as_array)
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        // The 503 override is the pod's command plus -status-code=503.
        assert_eq!(
            command,
            ["-listen=:8080".to_string(), format!("-text={pod}")],
            "{pod}: steps.sh's 503 override repeats this command"
        );
    }
    assert!(steps.contains(r#"command: ["-listen=:8080", "-text=%s", "-status-code=503"]"#));
}

#[test]
fn make_e2e_runs_make_compose() {
    let makefile = read("Makefile");
    let e2e: Vec<&str> = makefile
        .split("\ne2e:")
        .nth(1)
        .expect("an e2e target")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert!(
        e2e.iter().any(|l| l.trim() == "scripts/compose.sh"),
        "e2e recipe: {e2e:?}"
    );
}
