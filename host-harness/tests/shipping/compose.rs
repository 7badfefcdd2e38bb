//! The docker-compose demo against the `make demo` configuration.

use super::istio::envoy_validates_cluster;
use super::*;

/// A file in JSON syntax with `#` comment lines, read as the demo reads it.
fn commented_json(rel: &str) -> Value {
    let text = read(rel);
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn describe_demo() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--describe")
        .arg("--config-dir")
        .arg(root().join("envoy/demo"))
        .output()
        .expect("run demo --describe");
    assert!(
        out.status.success(),
        "demo --describe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("describe output")
}

/// Host path (canonical) behind a container path, through `volumes`.
fn host_path(compose_dir: &Path, volumes: &[String], container: &str) -> Option<PathBuf> {
    volumes.iter().find_map(|v| {
        let mut parts = v.split(':');
        let (src, dst) = (parts.next()?, parts.next()?);
        let rest = container.strip_prefix(dst)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(norm(
            &compose_dir.join(src).join(rest.trim_start_matches('/')),
        ))
    })
}

#[test]
fn demo_files_are_yaml_and_json_alike() {
    for rel in ["envoy/demo/envoy.yaml", "envoy/demo/cds.yaml"] {
        assert_eq!(
            yaml(rel),
            commented_json(rel),
            "{rel}: YAML and the demo's JSON reading differ"
        );
    }
    let bootstrap = yaml("envoy/demo/envoy.yaml");
    // The demo counts attempts from these access logs.
    let text = bootstrap.to_string();
    assert!(
        text.contains(&serde_json::to_string(UPSTREAM_FORMAT).expect("json")),
        "upstream_log format"
    );
    assert!(
        text.contains(&serde_json::to_string(DOWNSTREAM_FORMAT).expect("json")),
        "access_log format"
    );
}

#[test]
fn docker_compose_runs_the_demo_configuration() {
    let compose_dir = root().join("envoy");
    let compose = yaml("envoy/docker-compose.yaml");
    let describe = describe_demo();
    let envoy = compose.pointer("/services/envoy").expect("services.envoy");
    assert_eq!(s(envoy, "/image"), "envoyproxy/envoy:v1.40-latest");
    let volumes: Vec<String> = envoy
        .get("volumes")
        .and_then(Value::as_array)
        .expect("volumes")
        .iter()
        .map(|v| v.as_str().expect("short volume syntax").to_string())
        .collect();
    let command: Vec<&str> = envoy
        .get("command")
        .and_then(Value::as_array)
        .expect("command")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    let config = command
        .iter()
        .position(|a| *a == "-c" || *a == "--config-path")
        .and_then(|i| command.get(i + 1))
        .expect("envoy -c");

    // The same files: compose's config path, through its volumes, is the
    // file `make demo` reads; so are the CDS file and the filter.
    let canon = |rel: &str| norm(&root().join(rel));
    assert_eq!(
        host_path(&compose_dir, &volumes, config),
        Some(canon("envoy/demo/envoy.yaml"))
    );
    assert_eq!(
        PathBuf::from(s(&describe, "/bootstrap")),
        canon("envoy/demo/envoy.yaml")
    );
    assert_eq!(
        PathBuf::from(s(&describe, "/cds")),
        canon("envoy/demo/cds.yaml")
    );
    let bootstrap = yaml("envoy/demo/envoy.yaml");
    let cds_in_config = s(
        &bootstrap,
        "/dynamic_resources/cds_config/path_config_source/path",
    );
    let watched = s(
        &bootstrap,
        "/dynamic_resources/cds_config/path_config_source/watched_directory/path",
    );
    assert_eq!(cds_in_config, s(&describe, "/substituted/cds_path"));
    assert_eq!(watched, s(&describe, "/substituted/watched_directory"));
    assert_eq!(
        host_path(&compose_dir, &volumes, cds_in_config),
        Some(canon("envoy/demo/cds.yaml"))
    );
    assert_eq!(
        host_path(&compose_dir, &volumes, watched),
        Some(canon("envoy/demo"))
    );
    let wasm_in_config = s(&describe, "/substituted/wasm");
    assert!(bootstrap
        .to_string()
        .contains(&format!("\"filename\":\"{wasm_in_config}\"")));
    let wasm_host =
        host_path(&compose_dir, &volumes, wasm_in_config).expect("the filter is mounted");
    assert_eq!(
        wasm_host,
        canon("build/locality_failover.wasm"),
        "make build's output"
    );

    // Ports: every listener and the admin interface published as themselves.
    let published: BTreeSet<u64> = envoy
        .get("ports")
        .and_then(Value::as_array)
        .expect("ports")
        .iter()
        .map(|p| {
            let p = p.as_str().expect("\"ip:host:container\"");
            let parts: Vec<&str> = p.split(':').collect();
            let (host, container) = (parts[parts.len() - 2], parts[parts.len() - 1]);
            assert_eq!(host, container, "{p}: the same port outside");
            container.parse().expect("port")
        })
        .collect();
    let mut wanted: BTreeSet<u64> = describe
        .get("listeners")
        .and_then(Value::as_array)
        .expect("listeners")
        .iter()
        .map(|l| l.get("port").and_then(Value::as_u64).expect("port"))
        .collect();
    wanted.insert(
        describe
            .get("admin_port")
            .and_then(Value::as_u64)
            .expect("admin port"),
    );
    assert_eq!(published, wanted);
    for l in bootstrap
        .pointer("/static_resources/listeners")
        .and_then(Value::as_array)
        .expect("listeners")
    {
        assert_eq!(
            s(l, "/address/socket_address/address"),
            "0.0.0.0",
            "reachable through the port mapping"
        );
    }

    // Pods: one service per pod, at the pod's address, answering with its
    // name, on the network its labels name, with its labels.
    let services = compose
        .get("services")
        .and_then(Value::as_object)
        .expect("services");
    let networks = compose
        .get("networks")
        .and_then(Value::as_object)
        .expect("networks");
    let envoy_networks: BTreeSet<&str> = envoy
        .get("networks")
        .and_then(Value::as_array)
        .expect("envoy networks")
        .iter()
        .map(|n| n.as_str().expect("name"))
        .collect();
    let pods = describe
        .get("pods")
        .and_then(Value::as_array)
        .expect("pods");
    assert_eq!(pods.len(), 4);
    for pod in pods {
        let name = s(pod, "/name");
        let (ip, port) = s(pod, "/address").split_once(':').expect("ip:port");
        let svc = services
            .get(name)
            .unwrap_or_else(|| panic!("no compose service {name}"));
        let net_label = s(pod, "/labels/topology.istio.io~1network");
        let nets = svc
            .get("networks")
            .and_then(Value::as_object)
            .expect("networks with addresses");
        assert_eq!(
            nets.keys().collect::<Vec<_>>(),
            [net_label],
            "{name}: on its network"
        );
        assert_eq!(s(&nets[net_label], "/ipv4_address"), ip, "{name}");
        assert!(
            envoy_networks.contains(net_label),
            "envoy reaches {net_label}"
        );
        let subnet = s(&networks[net_label], "/ipam/config/0/subnet");
        assert!(in_subnet(ip, subnet), "{name}: {ip} in {subnet}");
        let cmd: Vec<&str> = svc
            .get("command")
            .and_then(Value::as_array)
            .expect("command")
            .iter()
            .map(|v| v.as_str().expect("string"))
            .collect();
        assert!(
            cmd.contains(&format!("-listen=:{port}").as_str()),
            "{name} listens on {port}"
        );
        assert!(
            cmd.contains(&format!("-text={name}").as_str()),
            "{name} answers its name"
        );
        assert_eq!(svc.get("labels"), pod.get("labels"), "{name}: labels");
        assert!(
            svc.get("depends_on").is_none()
                && envoy
                    .get("depends_on")
                    .is_some_and(|d| d.to_string().contains(name)),
            "envoy starts after {name}"
        );
    }
    assert_eq!(
        services.len(),
        pods.len() + 1,
        "envoy and the pods, nothing else"
    );

    // Plugin configuration per listener: valid; only the guide's own
    // [zone, region] listener draws the warning.
    for l in describe
        .get("listeners")
        .and_then(Value::as_array)
        .expect("listeners")
    {
        let name = s(l, "/name");
        let config: Value =
            serde_json::from_str(s(l, "/plugin_config")).expect("plugin config JSON");
        Settings::from_bytes(s(l, "/plugin_config").as_bytes())
            .unwrap_or_else(|e| panic!("{name}: the filter refuses its configuration: {e}"));
        let findings = lint_json(&config).expect("lint");
        if name == "step6-zone-region" {
            assert_eq!(findings.len(), 1, "{name}: {findings:?}");
            assert!(findings[0].message.contains("comes before"), "{findings:?}");
        } else {
            assert!(findings.is_empty(), "{name}: {findings:?}");
        }
    }
}

fn in_subnet(ip: &str, cidr: &str) -> bool {
    let parse = |a: &str| -> u32 {
        a.split('.')
            .map(|o| o.parse::<u32>().expect("octet"))
            .fold(0, |acc, o| (acc << 8) | o)
    };
    let (net, bits) = cidr.split_once('/').expect("cidr");
    let bits: u32 = bits.parse().expect("prefix length");
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    parse(ip) & mask == parse(net) & mask
}

#[test]
fn demo_bootstrap_passes_envoy_validation() {
    let Some(envoy) = envoy_binary() else {
        eprintln!("SKIP: envoy not on PATH");
        return;
    };
    let wasm = root().join("build/locality_failover.wasm");
    if !wasm.is_file() {
        eprintln!(
            "SKIP: {} not built (Envoy validation loads the module)",
            wasm.display()
        );
        return;
    }
    // The compose paths, pointed at this checkout (as the demo does).
    let dir = TempDir::new("demo-validate").expect("temp dir");
    let text = read("envoy/demo/envoy.yaml")
        .replace("/etc/envoy/locality_failover.wasm", &wasm.to_string_lossy())
        .replace("/etc/envoy/demo", &dir.path().to_string_lossy());
    std::fs::write(dir.path().join("envoy.yaml"), text).expect("write");
    std::fs::copy(
        root().join("envoy/demo/cds.yaml"),
        dir.path().join("cds.yaml"),
    )
    .expect("copy");
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(dir.path().join("envoy.yaml"))
        .output()
        .expect("envoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // validate does not read the CDS file: check the cluster as a static one.
    let mut cluster = commented_json("envoy/demo/cds.yaml")["resources"][0].clone();
    cluster.as_object_mut().expect("cluster").remove("@type");
    let out = envoy_validates_cluster(&cluster).expect("envoy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// `host-harness lint`.
