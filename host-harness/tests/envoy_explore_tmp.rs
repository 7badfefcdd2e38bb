use host_harness::envoy::config::*;
use host_harness::envoy::*;
use std::time::Duration;

#[test]
fn explore() {
    let ups = Upstreams::start(&["a", "b"]).unwrap();
    let dir = TempDir::new("explore").unwrap();
    let layout = Layout::new(dir.path());
    let eps: Vec<Endpoint> = ups.names().iter().map(|n| Endpoint::new(n.clone(), ups.addr(n).unwrap())).collect();
    let mut cfg = FilterModeConfig::new(Steering::override_host(), eps);
    cfg.retry = Some(RetryPolicy::new(2, "connect-failure"));
    let envoy = EnvoyProcess::start(&layout, &cfg.generate(&layout), &EnvoyOptions::default()).unwrap();
    let l = envoy.listener().unwrap();
    println!("listener {l} admin {}", envoy.admin_addr());
    let a = ups.addr("a").unwrap().to_string();
    let b = ups.addr("b").unwrap().to_string();
    let r = http_get(l, "/", &[("x-locality-failover-hosts", &a)], Duration::from_secs(5)).unwrap();
    println!("{} {}", r.status, r.text());
    ups.set("a", UpstreamState::Refused).unwrap();
    let mark = envoy.access_log().mark();
    let hdr = format!("{a},{b}");
    let r = http_get(l, "/", &[("x-locality-failover-hosts", &hdr)], Duration::from_secs(5)).unwrap();
    println!("{} {}", r.status, r.text());
    let r = http_get(l, "/", &[("x-locality-failover-hosts", &a)], Duration::from_secs(5)).unwrap();
    println!("{} {} {:?}", r.status, r.text(), r.headers);
    let c = envoy.access_log().wait_requests(mark, 2, Duration::from_secs(5));
    println!("{c:#?}");
    println!("{}", std::fs::read_to_string(layout.access_log()).unwrap());
    for h in envoy.hosts("svc").unwrap() { println!("{h:?}"); }
    println!("{:?}", envoy.stats_with_prefix("cluster_manager.cds"));
    println!("{:?}", envoy.stats_with_prefix("cluster_manager.warming"));
    println!("{}", envoy.log_tail(30));
}
