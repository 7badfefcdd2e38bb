use super::*;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use crate::config::{TrafficDistribution, LABEL_HOSTNAME};
use crate::inventory::EndpointSpec;

// ---------------------------------------------------------------- helpers

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// One endpoint per label set, addresses 10.0.0.1, 10.0.0.2, ... in order.
fn inventory(endpoints: &[&[(&str, &str)]]) -> Inventory {
    let specs: Vec<EndpointSpec> = endpoints
        .iter()
        .enumerate()
        .map(|(i, l)| EndpointSpec {
            address: format!("10.0.0.{}:8080", i + 1),
            labels: labels(l),
            ..Default::default()
        })
        .collect();
    Inventory::from_specs(&specs).unwrap()
}

fn weighted_inventory(endpoints: &[(&[(&str, &str)], u32)]) -> Inventory {
    let specs: Vec<EndpointSpec> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (l, w))| EndpointSpec {
            address: format!("10.0.0.{}:8080", i + 1),
            labels: labels(l),
            weight: Some(*w),
            ..Default::default()
        })
        .collect();
    Inventory::from_specs(&specs).unwrap()
}

fn priority_rule(entries: &[&str]) -> RankingRule {
    RankingRule::FailoverPriority {
        labels: entries.iter().map(|e| PriorityLabel::parse(e)).collect(),
        failover: vec![],
    }
}

fn parsed(entries: &[&str]) -> Vec<PriorityLabel> {
    entries.iter().map(|e| PriorityLabel::parse(e)).collect()
}

/// Raw (uncompacted) failoverPriority value of every endpoint.
fn raw(entries: &[&str], client: &Labels, inv: &Inventory) -> Vec<u32> {
    let list = parsed(entries);
    inv.endpoints()
        .iter()
        .map(|e| failover_priority(&list, client, e))
        .collect()
}

fn prio(ranking: &Ranking) -> Vec<Option<u32>> {
    ranking.priority.clone()
}

fn all(ps: &[u32]) -> Vec<Option<u32>> {
    ps.iter().map(|p| Some(*p)).collect()
}

fn failover(from: &str, to: &str) -> RegionFailover {
    RegionFailover {
        from: from.into(),
        to: to.into(),
    }
}

// The guide's client: us-east-1a in cluster1-network.
fn guide_client() -> Labels {
    labels(&[
        (LABEL_NETWORK, "cluster1-network"),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ])
}

const NET1: (&str, &str) = (LABEL_NETWORK, "cluster1-network");
const NET2: (&str, &str) = (LABEL_NETWORK, "cluster2-network");
const EAST: (&str, &str) = (LABEL_REGION, "us-east-1");
const WEST: (&str, &str) = (LABEL_REGION, "us-west-2");
const ZONE_1A: (&str, &str) = (LABEL_ZONE, "us-east-1a");
const ZONE_1B: (&str, &str) = (LABEL_ZONE, "us-east-1b");
const ZONE_2A: (&str, &str) = (LABEL_ZONE, "us-west-2a");
const ZONE_2B: (&str, &str) = (LABEL_ZONE, "us-west-2b");

// ------------------------------------------------------- failoverPriority

#[test]
fn prefix_rule_first_mismatch_gives_n_minus_j() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: the first label j
    // whose value differs gives priority n - j; all equal gives 0.
    let client = labels(&[("a", "1"), ("b", "1"), ("c", "1")]);
    let inv = inventory(&[
        &[("a", "1"), ("b", "1"), ("c", "1")], // full match
        &[("a", "1"), ("b", "1"), ("c", "2")], // c (j=2) differs
        &[("a", "1"), ("b", "2"), ("c", "1")], // b (j=1) differs
        &[("a", "2"), ("b", "1"), ("c", "1")], // a (j=0) differs
    ]);
    assert_eq!(raw(&["a", "b", "c"], &client, &inv), vec![0, 1, 2, 3]);
}

#[test]
fn prefix_rule_full_mismatch_gives_n() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: lowestPriority = len(list)
    // is what a mismatch on the first label gets.
    let client = labels(&[("a", "1"), ("b", "1")]);
    let inv = inventory(&[&[("a", "2"), ("b", "2")]]);
    assert_eq!(raw(&["a", "b"], &client, &inv), vec![2]);
}

#[test]
fn prefix_rule_later_labels_do_not_count_after_a_miss() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: `break` at the first
    // mismatch, so labels after it do not count (prefix semantics).
    let client = labels(&[("a", "1"), ("b", "1"), ("c", "1")]);
    let inv = inventory(&[
        &[("a", "2"), ("b", "1"), ("c", "1")],
        &[("a", "2"), ("b", "2"), ("c", "2")],
    ]);
    assert_eq!(raw(&["a", "b", "c"], &client, &inv), vec![3, 3]);
    let ranking = rank(&priority_rule(&["a", "b", "c"]), &client, &inv);
    assert_eq!(prio(&ranking), all(&[0, 0]));
}

#[test]
fn label_missing_on_both_sides_is_a_match() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: proxyLabels[label] and
    // istioEndpoint.Labels[label] are both "" when absent, and "" == "".
    let client = labels(&[("a", "1")]);
    let inv = inventory(&[
        &[("a", "1")],             // b absent on both sides: match
        &[("a", "1"), ("b", "x")], // b absent on the client only: mismatch at j=1
    ]);
    assert_eq!(raw(&["a", "b"], &client, &inv), vec![0, 1]);
}

#[test]
fn label_missing_on_the_endpoint_only_is_a_mismatch() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: "1" != "" (absent).
    let client = labels(&[("a", "1"), ("b", "1")]);
    let inv = inventory(&[&[("a", "1")]]);
    assert_eq!(raw(&["a", "b"], &client, &inv), vec![1]);
}

#[test]
fn priorities_are_compacted_without_gaps_keeping_order() {
    // istio loadbalancer.go applyFailoverPriorities: sort the distinct priorities and
    // renumber 0..k-1 ("Priorities should range from 0 (highest) to N (lowest) without skipping").
    let client = labels(&[("a", "1"), ("b", "1"), ("c", "1")]);
    let inv = inventory(&[
        &[("a", "2")],                         // raw 3
        &[("a", "1"), ("b", "1"), ("c", "1")], // raw 0
        &[("a", "1"), ("b", "1"), ("c", "9")], // raw 1
        &[("a", "3")],                         // raw 3
    ]);
    assert_eq!(raw(&["a", "b", "c"], &client, &inv), vec![3, 0, 1, 3]);
    let ranking = rank(&priority_rule(&["a", "b", "c"]), &client, &inv);
    assert_eq!(prio(&ranking), all(&[2, 0, 1, 2]));
    assert_eq!(ranking.levels, 3);
    assert_eq!(ranking.members(), vec![vec![1], vec![2], vec![0, 3]]);
}

#[test]
fn override_value_replaces_the_clients_value() {
    // istio loadbalancer.go priorityLabelOverrides (release note 43535, issue 39111):
    // `label=value` compares the endpoint's label with `value`, not the proxy's.
    let client = labels(&[("version", "v2"), ("app", "x")]);
    let inv = inventory(&[
        &[("version", "v1"), ("app", "x")],
        &[("version", "v2"), ("app", "x")],
    ]);
    assert_eq!(raw(&["version=v1", "app"], &client, &inv), vec![0, 2]);
}

#[test]
fn three_part_entry_carries_no_override() {
    // istio loadbalancer.go priorityLabelOverrides: strings.Split(entry, "="); only
    // exactly two parts set an override; the label name is still parts[0].
    let label = PriorityLabel::parse("version=v1=x");
    assert_eq!(label.name, "version");
    assert_eq!(label.value, None);
    let client = labels(&[("version", "v2")]);
    let inv = inventory(&[&[("version", "v2")], &[("version", "v1")]]);
    // Compared with the client's own value (v2), not with "v1" or "v1=x".
    assert_eq!(raw(&["version=v1=x"], &client, &inv), vec![0, 1]);
}

#[test]
fn two_part_entry_parses_name_and_value() {
    // istio loadbalancer.go priorityLabelOverrides: len(parts) == 2 -> override.
    let label = PriorityLabel::parse("topology.istio.io/cluster=clusterA");
    assert_eq!(label.name, "topology.istio.io/cluster");
    assert_eq!(label.value.as_deref(), Some("clusterA"));
    let plain = PriorityLabel::parse("app");
    assert_eq!(plain.name, "app");
    assert_eq!(plain.value, None);
}

#[test]
fn network_first_rule_full_table() {
    // istio loadbalancer.go (1.31, commit b6787c1 "Network locality is preferred but
    // not required"); spec failover-semantics.md §1: [network, region, zone] gives
    // N+R+Z 0, N+R 1, N 2, other network with R+Z 3, R 4, none 5.
    let client = guide_client();
    let inv = inventory(&[
        &[NET1, EAST, ZONE_1A],
        &[NET1, EAST, ZONE_1B],
        &[NET1, WEST, ZONE_2A],
        &[NET2, EAST, ZONE_1A],
        &[NET2, EAST, ZONE_1B],
        &[NET2, WEST, ZONE_2A],
    ]);
    let list = [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE];
    assert_eq!(raw(&list, &client, &inv), vec![0, 1, 2, 3, 4, 5]);
    let ranking = rank(&priority_rule(&list), &client, &inv);
    assert_eq!(prio(&ranking), all(&[0, 1, 2, 3, 4, 5]));
    assert_eq!(ranking.levels, 6);
}

#[test]
fn network_first_rule_needs_the_bare_network_label_first() {
    // istio loadbalancer.go (1.31): the rule applies only when list[0] is exactly
    // `topology.istio.io/network`; with `=value` it is the plain prefix rule.
    let client = guide_client();
    let inv = inventory(&[&[NET2, EAST, ZONE_1A], &[NET1, WEST, ZONE_2A]]);
    let list = [
        "topology.istio.io/network=cluster1-network",
        LABEL_REGION,
        LABEL_ZONE,
    ];
    // Other network: full mismatch -> n = 3, whatever region/zone say.
    assert_eq!(raw(&list, &client, &inv), vec![3, 2]);
}

#[test]
fn network_not_first_follows_the_plain_prefix_rule() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: network-first only for
    // list[0]; elsewhere a network mismatch stops the walk like any label.
    let client = guide_client();
    let inv = inventory(&[&[NET2, EAST, ZONE_1A], &[NET1, WEST, ZONE_2A]]);
    assert_eq!(
        raw(&[LABEL_REGION, LABEL_NETWORK], &client, &inv),
        vec![1, 2]
    );
}

#[test]
fn zone_region_order_puts_other_zone_with_other_regions() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality + spec §1 "consequence":
    // with [zone, region] the zone misses first, so us-east-1b gets n = 2 like us-west-2.
    let client = guide_client();
    let inv = inventory(&[
        &[NET1, EAST, ZONE_1A],
        &[NET1, EAST, ZONE_1B],
        &[NET2, WEST, ZONE_2A],
        &[NET2, WEST, ZONE_2B],
    ]);
    assert_eq!(
        raw(&[LABEL_ZONE, LABEL_REGION], &client, &inv),
        vec![0, 2, 2, 2]
    );
    let ranking = rank(&priority_rule(&[LABEL_ZONE, LABEL_REGION]), &client, &inv);
    assert_eq!(prio(&ranking), all(&[0, 1, 1, 1]));
    assert_eq!(ranking.levels, 2);
}

#[test]
fn network_region_zone_order_gives_zone_region_then_rest() {
    // spec failover-semantics.md §1: `[network, region, zone]` gives zone -> region ->
    // network -> rest (compacted, istio loadbalancer.go applyFailoverPriorities).
    let client = guide_client();
    let inv = inventory(&[
        &[NET1, EAST, ZONE_1A],
        &[NET1, EAST, ZONE_1B],
        &[NET2, WEST, ZONE_2A],
        &[NET2, WEST, ZONE_2B],
    ]);
    let list = [LABEL_NETWORK, LABEL_REGION, LABEL_ZONE];
    let ranking = rank(&priority_rule(&list), &client, &inv);
    assert_eq!(prio(&ranking), all(&[0, 1, 2, 2]));
}

#[test]
fn client_without_labels_gets_everything_at_p0() {
    // istio loadbalancer.go applyFailoverPriorities: `if len(proxyLabels) == 0 { return }`.
    let inv = inventory(&[
        &[NET1, EAST, ZONE_1A],
        &[NET2, WEST, ZONE_2A],
        &[("a", "b")],
    ]);
    let ranking = rank(
        &priority_rule(&[LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]),
        &Labels::new(),
        &inv,
    );
    assert_eq!(prio(&ranking), all(&[0, 0, 0]));
    assert_eq!(ranking.levels, 1);
}

#[test]
fn flat_rule_puts_everything_at_p0() {
    // istio loadbalancer.go ApplyLocalityLoadBalancer: without enableFailover no
    // priority is assigned (every endpoint stays at 0).
    let inv = inventory(&[&[NET1], &[NET2]]);
    let ranking = rank(&RankingRule::Flat, &guide_client(), &inv);
    assert_eq!(prio(&ranking), all(&[0, 0]));
    assert_eq!(ranking.levels, 1);
}

#[test]
fn weights_pass_through_for_priority_rules() {
    // istio loadbalancer.go applyFailoverPriorityPerLocality: each group keeps its
    // LbEndpoints (and their weights); only the priority changes.
    let inv = weighted_inventory(&[(&[NET1], 3), (&[NET2], 7)]);
    let ranking = rank(&priority_rule(&[LABEL_NETWORK]), &guide_client(), &inv);
    assert_eq!(ranking.weight, vec![3, 7]);
}

// ------------------------------------------------------ locality tiers

#[test]
fn default_locality_tiers_0_to_3() {
    // istio util.go LbPriority: region+zone+subzone 0, region+zone 1, region 2, else 3.
    let client = labels(&[
        (LABEL_REGION, "r1"),
        (LABEL_ZONE, "z1"),
        (LABEL_SUBZONE, "s1"),
    ]);
    let inv = inventory(&[
        &[
            (LABEL_REGION, "r1"),
            (LABEL_ZONE, "z1"),
            (LABEL_SUBZONE, "s1"),
        ],
        &[
            (LABEL_REGION, "r1"),
            (LABEL_ZONE, "z1"),
            (LABEL_SUBZONE, "s2"),
        ],
        &[
            (LABEL_REGION, "r1"),
            (LABEL_ZONE, "z2"),
            (LABEL_SUBZONE, "s1"),
        ],
        &[
            (LABEL_REGION, "r2"),
            (LABEL_ZONE, "z1"),
            (LABEL_SUBZONE, "s1"),
        ],
    ]);
    let tiers: Vec<u32> = inv
        .endpoints()
        .iter()
        .map(|e| locality_tier(&client, e, &[]))
        .collect();
    assert_eq!(tiers, vec![0, 1, 2, 3]);
    let ranking = rank(
        &RankingRule::LocalityTiers { failover: vec![] },
        &client,
        &inv,
    );
    assert_eq!(prio(&ranking), all(&[0, 1, 2, 3]));
}

#[test]
fn locality_tiers_compare_empty_with_empty() {
    // istio util.go LbPriority: string equality, so an absent subzone on both sides is equal.
    let client = labels(&[(LABEL_REGION, "r1"), (LABEL_ZONE, "z1")]);
    let inv = inventory(&[&[(LABEL_REGION, "r1"), (LABEL_ZONE, "z1")]]);
    let e = inv.get(0).unwrap();
    assert_eq!(locality_tier(&client, e, &[]), 0);
}

#[test]
fn failover_from_to_makes_other_regions_tier_4() {
    // istio loadbalancer.go applyLocalityFailover: for a tier-3 endpoint, the entry whose
    // from == proxy region sends every region other than its `to` to 4.
    let client = labels(&[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "us-east-1a")]);
    let inv = inventory(&[
        &[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "us-east-1a")],
        &[(LABEL_REGION, "us-west-2"), (LABEL_ZONE, "us-west-2a")],
        &[(LABEL_REGION, "eu-west-1"), (LABEL_ZONE, "eu-west-1a")],
    ]);
    let fo = [failover("us-east-1", "us-west-2")];
    let tiers: Vec<u32> = inv
        .endpoints()
        .iter()
        .map(|e| locality_tier(&client, e, &fo))
        .collect();
    assert_eq!(tiers, vec![0, 3, 4]);
    let ranking = rank(
        &RankingRule::LocalityTiers {
            failover: fo.to_vec(),
        },
        &client,
        &inv,
    );
    // Compacted: 0, 3, 4 -> 0, 1, 2.
    assert_eq!(prio(&ranking), all(&[0, 1, 2]));
}

#[test]
fn failover_without_matching_from_leaves_tier_3() {
    // istio loadbalancer.go applyLocalityFailover: no entry with from == proxy region,
    // so other regions stay at 3.
    let client = labels(&[(LABEL_REGION, "us-east-1")]);
    let inv = inventory(&[
        &[(LABEL_REGION, "us-west-2")],
        &[(LABEL_REGION, "eu-west-1")],
    ]);
    let fo = [failover("eu-west-1", "us-west-2")];
    let tiers: Vec<u32> = inv
        .endpoints()
        .iter()
        .map(|e| locality_tier(&client, e, &fo))
        .collect();
    assert_eq!(tiers, vec![3, 3]);
}

#[test]
fn failover_uses_the_first_matching_from() {
    // istio loadbalancer.go applyLocalityFailover: `break` after the first entry whose
    // From equals the proxy's region.
    let client = labels(&[(LABEL_REGION, "us-east-1")]);
    let inv = inventory(&[
        &[(LABEL_REGION, "us-west-2")],
        &[(LABEL_REGION, "eu-west-1")],
    ]);
    let fo = [
        failover("us-east-1", "us-west-2"),
        failover("us-east-1", "eu-west-1"),
    ];
    let tiers: Vec<u32> = inv
        .endpoints()
        .iter()
        .map(|e| locality_tier(&client, e, &fo))
        .collect();
    assert_eq!(tiers, vec![3, 4]);
}

#[test]
fn failover_does_not_touch_same_region_tiers() {
    // istio loadbalancer.go applyLocalityFailover: the override only applies to priority 3.
    let client = labels(&[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "a")]);
    let inv = inventory(&[&[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "b")]]);
    let fo = [failover("us-east-1", "us-west-2")];
    assert_eq!(locality_tier(&client, inv.get(0).unwrap(), &fo), 2);
}

#[test]
fn failover_priority_and_failover_compose_p_times_5_plus_tier() {
    // istio loadbalancer.go ApplyLocalityLoadBalancer -> applyFailoverPriorities then
    // applyLocalityFailover: priority = p*5 + tier, compacted again.
    let client = labels(&[
        ("version", "v1"),
        (LABEL_REGION, "us-east-1"),
        (LABEL_ZONE, "us-east-1a"),
    ]);
    let inv = inventory(&[
        &[
            ("version", "v2"),
            (LABEL_REGION, "us-east-1"),
            (LABEL_ZONE, "us-east-1a"),
        ], // 1*5+0 = 5
        &[
            ("version", "v1"),
            (LABEL_REGION, "eu-west-1"),
            (LABEL_ZONE, "eu-west-1a"),
        ], // 0*5+4 = 4
        &[
            ("version", "v1"),
            (LABEL_REGION, "us-east-1"),
            (LABEL_ZONE, "us-east-1a"),
        ], // 0
        &[
            ("version", "v1"),
            (LABEL_REGION, "us-west-2"),
            (LABEL_ZONE, "us-west-2a"),
        ], // 0*5+3 = 3
        &[
            ("version", "v2"),
            (LABEL_REGION, "eu-west-1"),
            (LABEL_ZONE, "eu-west-1a"),
        ], // 1*5+4 = 9
    ]);
    let rule = RankingRule::FailoverPriority {
        labels: parsed(&["version"]),
        failover: vec![failover("us-east-1", "us-west-2")],
    };
    let ranking = rank(&rule, &client, &inv);
    // Raw 5, 4, 0, 3, 9 -> compacted 3, 2, 0, 1, 4.
    assert_eq!(prio(&ranking), all(&[3, 2, 0, 1, 4]));
    assert_eq!(ranking.levels, 5);
}

// ------------------------------------------------- traffic distributions

#[test]
fn prefer_network_ranks_by_network_only() {
    // spec failover-semantics.md §2: PreferNetwork (the guide's default) ranks by [network].
    let inv = inventory(&[
        &[NET1, WEST, ZONE_2A],
        &[NET2, EAST, ZONE_1A],
        &[NET1, EAST, ZONE_1A],
    ]);
    let ranking = rank(
        &TrafficDistribution::PreferNetwork.rule(),
        &guide_client(),
        &inv,
    );
    assert_eq!(prio(&ranking), all(&[0, 1, 0]));
}

#[test]
fn prefer_close_is_network_region_zone_without_subzone() {
    // istio reference §1.5 (Istio 1.27+): PreferClose/PreferSameZone =
    // [network, region, zone]; subzone is not part of it.
    let rule = TrafficDistribution::PreferClose.rule();
    let RankingRule::FailoverPriority {
        labels: list,
        failover,
    } = &rule
    else {
        panic!("PreferClose should be a failoverPriority rule: {rule:?}");
    };
    assert!(failover.is_empty());
    let names: Vec<&str> = list.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec![LABEL_NETWORK, LABEL_REGION, LABEL_ZONE]);

    let mut client = guide_client();
    client.insert(LABEL_SUBZONE.into(), "s1".into());
    let inv = inventory(&[
        &[NET1, EAST, ZONE_1A, (LABEL_SUBZONE, "s1")],
        &[NET1, EAST, ZONE_1A, (LABEL_SUBZONE, "s2")],
        &[NET1, EAST, ZONE_1B, (LABEL_SUBZONE, "s1")],
    ]);
    let ranking = rank(&rule, &client, &inv);
    // Another subzone of the same zone shares P0.
    assert_eq!(prio(&ranking), all(&[0, 0, 1]));
}

#[test]
fn prefer_same_node_adds_subzone_and_hostname() {
    // istio reference §1.5: PreferSameNode = [network, region, zone, subzone,
    // kubernetes.io/hostname].
    let mut client = guide_client();
    client.insert(LABEL_SUBZONE.into(), "s1".into());
    client.insert(LABEL_HOSTNAME.into(), "node-1".into());
    let inv = inventory(&[
        &[
            NET1,
            EAST,
            ZONE_1A,
            (LABEL_SUBZONE, "s1"),
            (LABEL_HOSTNAME, "node-1"),
        ],
        &[
            NET1,
            EAST,
            ZONE_1A,
            (LABEL_SUBZONE, "s1"),
            (LABEL_HOSTNAME, "node-2"),
        ],
        &[
            NET1,
            EAST,
            ZONE_1A,
            (LABEL_SUBZONE, "s2"),
            (LABEL_HOSTNAME, "node-3"),
        ],
        &[
            NET1,
            EAST,
            ZONE_1B,
            (LABEL_SUBZONE, "s1"),
            (LABEL_HOSTNAME, "node-4"),
        ],
        &[
            NET2,
            EAST,
            ZONE_1A,
            (LABEL_SUBZONE, "s1"),
            (LABEL_HOSTNAME, "node-1"),
        ],
    ]);
    let ranking = rank(&TrafficDistribution::PreferSameNode.rule(), &client, &inv);
    // Raw: 0, 1 (hostname), 2 (subzone), 3 (zone), 5 + 0 = 5 (network-first, rest matches).
    assert_eq!(prio(&ranking), all(&[0, 1, 2, 3, 4]));
}

// ------------------------------------------------------------ distribute

fn distribute_rule(from: &str, to: &[(&str, u32)]) -> DistributeRule {
    DistributeRule {
        from: from.into(),
        to: to.iter().map(|(k, w)| ((*k).to_string(), *w)).collect(),
    }
}

#[test]
fn distribute_first_matching_from_wins() {
    // istio loadbalancer.go applyLocalityWeights: `break` after the first rule whose
    // From matches the proxy's locality.
    let client = labels(&[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "us-east-1a")]);
    let inv = inventory(&[&[EAST, ZONE_1A], &[WEST, ZONE_2A]]);
    let rules = vec![
        distribute_rule("us-east-1/*", &[("us-west-2", 100)]),
        distribute_rule("us-east-1/us-east-1a", &[("us-east-1", 100)]),
    ];
    let ranking = rank(&RankingRule::Distribute(rules), &client, &inv);
    // The first rule sends everything to us-west-2 and empties us-east-1.
    assert_eq!(prio(&ranking), vec![None, Some(0)]);
    assert!(ranking.locality_weighted);
    assert_eq!(
        ranking.locality_weight.get(&ranking.locality[1]),
        Some(&100)
    );
    assert_eq!(ranking.locality_weight.get(&ranking.locality[0]), None);
}

#[test]
fn distribute_excludes_localities_no_to_names() {
    // istio loadbalancer.go applyLocalityWeights: "remove groups of endpoints in a
    // locality that miss matched" (LbEndpoints = nil).
    let client = labels(&[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "us-east-1a")]);
    let inv = inventory(&[&[EAST, ZONE_1A], &[EAST, ZONE_1B], &[WEST, ZONE_2A]]);
    let rules = vec![distribute_rule(
        "us-east-1/us-east-1a",
        &[("us-east-1/us-east-1a", 70), ("us-west-2/*", 30)],
    )];
    let ranking = rank(&RankingRule::Distribute(rules), &client, &inv);
    assert_eq!(prio(&ranking), vec![Some(0), None, Some(0)]);
    assert_eq!(ranking.levels, 1);
    assert_eq!(ranking.members(), vec![vec![0, 2]]);
}

#[test]
fn distribute_weights_share_each_locality_weight() {
    // istio loadbalancer.go applyLocalityWeights: each matching group gets
    // ceil(groupWeight * w / sum of group weights of that key); the split per `to`
    // key follows its weight.
    let client = labels(&[(LABEL_REGION, "us-east-1"), (LABEL_ZONE, "us-east-1a")]);
    let inv = weighted_inventory(&[
        (&[EAST, ZONE_1A], 1),
        (&[EAST, ZONE_1A], 1),
        (&[WEST, ZONE_2A], 1),
        (&[WEST, ZONE_2B], 3),
    ]);
    let rules = vec![distribute_rule(
        "us-east-1",
        &[("us-east-1/us-east-1a", 80), ("us-west-2", 20)],
    )];
    let ranking = rank(&RankingRule::Distribute(rules), &client, &inv);
    assert_eq!(prio(&ranking), all(&[0, 0, 0, 0]));
    // Endpoint weights are untouched; localities get the weights Envoy's
    // locality-weighted LB picks by.
    assert_eq!(ranking.weight, vec![1, 1, 1, 3]);
    let lw = |i: usize| ranking.locality_weight.get(&ranking.locality[i]).copied();
    assert_eq!(ranking.locality[0], ranking.locality[1]);
    // us-east-1a (group weight 2): ceil(2 * 80 / 2) = 80.
    assert_eq!(lw(0), Some(80));
    // us-west-2 matches 2a (1) and 2b (3): ceil(1 * 20 / 4) = 5, ceil(3 * 20 / 4) = 15.
    assert_eq!(lw(2), Some(5));
    assert_eq!(lw(3), Some(15));
}

#[test]
fn distribute_without_matching_from_is_flat() {
    // istio loadbalancer.go applyLocalityWeights: no rule matches -> nothing changes.
    let client = labels(&[(LABEL_REGION, "eu-west-1")]);
    let inv = weighted_inventory(&[(&[EAST], 2), (&[WEST], 5)]);
    let rules = vec![distribute_rule("us-east-1", &[("us-west-2", 100)])];
    let ranking = rank(&RankingRule::Distribute(rules), &client, &inv);
    assert_eq!(prio(&ranking), all(&[0, 0]));
    assert_eq!(ranking.weight, vec![2, 5]);
}

#[test]
fn locality_match_wildcards() {
    // istio util.go LocalityMatch: `*` matches anything; an empty zone or subzone in the
    // rule matches anything; the region must match unless it is `*`.
    let loc = [
        "us-east-1".to_string(),
        "us-east-1a".to_string(),
        "s1".to_string(),
    ];
    assert!(locality_match(&loc, "us-east-1"));
    assert!(locality_match(&loc, "us-east-1/*"));
    assert!(locality_match(&loc, "us-east-1/us-east-1a"));
    assert!(locality_match(&loc, "us-east-1/us-east-1a/s1"));
    assert!(locality_match(&loc, "*"));
    assert!(locality_match(&loc, "*/us-east-1a/*"));
    assert!(!locality_match(&loc, "us-east-1/us-east-1b"));
    assert!(!locality_match(&loc, "us-west-2"));
    assert!(!locality_match(&loc, "us-east-1/us-east-1a/s2"));
}
