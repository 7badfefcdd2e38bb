//! The guide's steps.

use super::*;

impl Demo<'_> {
    pub(crate) fn steps(&mut self) -> Result<(), String> {
        // ------------------------------------------------------------ step 3
        self.heading(
            "Step 3: default multicluster L4 failover (PreferNetwork)",
            LISTENER_STEP3,
            "The Service has no traffic distribution: PreferNetwork, same network first.\n\
             (The guide's ztunnel makes this choice at L4; here the filter makes it.)",
        );
        self.scale(
            &[ABC, XYZ],
            "cluster 1 runs in-ambient with 1 replica (us-east-1a), cluster 2 with 1 (us-west-2a)",
        )?;
        self.ranking(LISTENER_STEP3)?;
        self.phase(
            "3a",
            "cluster 1 healthy: responses from the local cluster",
            LISTENER_STEP3,
            10,
            &[format!("{ABC}   (on every line)")],
            Expect::only(ABC, 10),
        )?;
        self.scale(
            &[XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        )?;
        self.ranking(LISTENER_STEP3)?;
        self.phase(
            "3b",
            "cluster 1 scaled to 0: failover to cluster 2",
            LISTENER_STEP3,
            5,
            &[format!("{XYZ}   (5 lines)")],
            Expect::only(XYZ, 5),
        )?;
        self.scale(
            &[ABC, XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=1",
        )?;
        self.phase(
            "3c",
            "scaled back to 1: traffic returns to cluster 1",
            LISTENER_STEP3,
            10,
            &["(the guide scales back up without sending requests)".into()],
            Expect::only(ABC, 10),
        )?;

        // ------------------------------------------------------------ step 4
        self.heading(
            "Step 4: zone-aware traffic distribution (PreferClose)",
            LISTENER_STEP4,
            "in-ambient is annotated networking.istio.io/traffic-distribution=PreferClose:\n\
             same zone, then same region, then other regions.",
        );
        self.scale(
            &[ABC, DEF, XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2\n\
             (pods in us-east-1a and us-east-1b; cluster 2 keeps its pod in us-west-2a)",
        )?;
        self.ranking(LISTENER_STEP4)?;
        self.phase(
            "4a",
            "all healthy: the pod in the client's zone",
            LISTENER_STEP4,
            10,
            &[format!("     10 {ABC}")],
            Expect::only(ABC, 10),
        )?;
        self.scale(
            &[DEF, XYZ],
            "$ kubectl --context=${context1} delete pod -n httpbin in-ambient-7d8f9b6c54-abc12\n\
             (as in the guide, the moment the zone has no pod; a Deployment would start a new one)",
        )?;
        self.ranking(LISTENER_STEP4)?;
        self.phase(
            "4b",
            "same-zone pod deleted: same region, other zone",
            LISTENER_STEP4,
            10,
            &[format!("     10 {DEF}")],
            Expect::only(DEF, 10),
        )?;
        self.scale(
            &[XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        )?;
        self.ranking(LISTENER_STEP4)?;
        self.phase(
            "4c",
            "region empty: other region (cluster 2)",
            LISTENER_STEP4,
            10,
            &[
                "     10 in-ambient-8e9f0c7d65-ghi78".into(),
                format!(
                    "(the guide's name for the cluster-2 pod here; steps 3 and 6 call it {XYZ})"
                ),
            ],
            Expect::only(XYZ, 10),
        )?;
        self.scale(
            &[ABC, DEF, XYZ],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2",
        )?;
        self.phase(
            "4d",
            "scaled back to 2: the same zone again",
            LISTENER_STEP4,
            10,
            &["(the guide scales back without sending requests)".into()],
            Expect::only(ABC, 10),
        )?;

        // ------------------------------------------------------------ step 6
        self.heading(
            "Step 6: DestinationRule with explicit failover priority, as the guide writes it",
            LISTENER_GUIDE_DR,
            "DestinationRule in-ambient-failover: failoverPriority [topology.kubernetes.io/zone,\n\
             topology.kubernetes.io/region], ROUND_ROBIN, outlierDetection consecutive5xxErrors 5,\n\
             interval 10s (1s here), baseEjectionTime 3m (3s here), maxEjectionPercent 50.\n\
             The guide says: \"same zone first, then same region, then other regions\".",
        );
        self.scale(
            &[ABC, DEF, XYZ, UVW],
            "cluster 2 runs 2 replicas, in us-west-2a and us-west-2b, as the step-6 diagram shows",
        )?;
        println!(
            "\n    Istio's rule (and the filter's): walk the labels in order; the FIRST label that differs\n\
             \x20   decides. For the us-east-1b pod the zone differs already, exactly as for the us-west-2\n\
             \x20   pods: all three share one priority. The region label is never reached."
        );
        self.ranking(LISTENER_GUIDE_DR)?;
        self.phase(
            "6a",
            "all healthy: same zone",
            LISTENER_GUIDE_DR,
            5,
            &["(the guide starts from here)".into()],
            Expect::only(ABC, 5),
        )?;
        self.scale(
            &[XYZ, UVW],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        )?;
        self.phase(
            "6b",
            "cluster 1 scaled to 0: failover to cluster 2, by the failover priority",
            LISTENER_GUIDE_DR,
            5,
            &[
                format!("{XYZ}   (5 lines)"),
                "(here round robin over both cluster-2 pods; the guide's example shows one)".into(),
            ],
            Expect {
                exact: vec![],
                spread: vec![XYZ, UVW],
                spread_total: 5,
                client_errors: 0,
            },
        )?;
        self.scale(
            &[ABC, DEF, XYZ, UVW],
            "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2",
        )?;
        self.set(
            ABC,
            UpstreamState::Http(503),
            "the app in us-east-1a starts failing: every request answers 503",
        )?;
        self.phase(
            "6c",
            "THE PITFALL: same-zone pod fails; ejected after 5 x 503; where does the rest go?",
            LISTENER_GUIDE_DR,
            10,
            &[
                "(not shown by the guide; its text promises \"then same region\": us-east-1b only)"
                    .into(),
                format!("Istio with [zone, region]: {DEF} ranks WITH the us-west-2 pods,"),
                "so after the ejection the traffic is spread over us-east-1b AND cluster 2.".into(),
                "Expected below = what Istio does with this DestinationRule.".into(),
            ],
            Expect {
                exact: vec![(ABC, 5)],
                spread: vec![DEF, XYZ, UVW],
                spread_total: 5,
                client_errors: 5,
            },
        )?;
        let ejected_at = Instant::now();
        let before = self.metric("unejections");
        self.set(ABC, UpstreamState::Healthy, "us-east-1a healthy again")?;
        // The filter's metrics are shared by the listeners: let this
        // ejection end before the next listener ejects anything.
        self.wait_for_return(ABC, ejected_at, before);

        self.heading(
            "Step 6, fixed: failoverPriority [network, region, zone]",
            LISTENER_FIXED_DR,
            "The same DestinationRule with failoverPriority [topology.istio.io/network,\n\
             topology.kubernetes.io/region, topology.kubernetes.io/zone]: now a pod of another zone\n\
             of us-east-1 differs only at the last label and ranks before cluster 2 -- what the guide\n\
             means by \"same zone, then same region, then other regions\" (`host-harness lint` and the\n\
             filter's configure-time warning suggest this order).",
        );
        self.ranking(LISTENER_FIXED_DR)?;
        self.phase(
            "6d",
            "all healthy: same zone",
            LISTENER_FIXED_DR,
            4,
            &["(as 6a)".into()],
            Expect::only(ABC, 4),
        )?;
        self.set(
            ABC,
            UpstreamState::Http(503),
            "the app in us-east-1a starts failing: every request answers 503",
        )?;
        self.phase(
            "6e",
            "same-zone pod fails: ejected after 5 x 503, then the same region",
            LISTENER_FIXED_DR,
            10,
            &[
                "(the guide: \"eject endpoints after 5 consecutive 5xx errors\"; then same region)"
                    .into(),
            ],
            Expect {
                exact: vec![(ABC, 5), (DEF, 5)],
                spread: vec![],
                spread_total: 0,
                client_errors: 5,
            },
        )?;
        let ejected_at = Instant::now();
        self.set(ABC, UpstreamState::Healthy, "us-east-1a recovers")?;
        self.phase(
            "6f",
            "recovered, but still ejected inside baseEjectionTime",
            LISTENER_FIXED_DR,
            6,
            &["(the guide: ejected for a 3-minute base ejection time)".into()],
            Expect::only(DEF, 6),
        )?;
        self.set(
            DEF,
            UpstreamState::Refused,
            "us-east-1b fails too: its pod refuses connections (a connect failure counts as 503)",
        )?;
        self.phase(
            "6g",
            "both cluster-1 zones down: after 5 failures the traffic leaves the region",
            LISTENER_FIXED_DR,
            9,
            &[
                "(the guide's diagram: us-east-1a unavailable -> \"failover to next region\")"
                    .into(),
            ],
            Expect {
                exact: vec![(DEF, 5)],
                spread: vec![XYZ, UVW],
                spread_total: 4,
                client_errors: 5,
            },
        )?;
        let before = self.metric("unejections");
        if !self.wait_for_return(ABC, ejected_at, before) {
            println!("    (the check below will show where the traffic went instead)");
        }
        self.phase(
            "6h",
            "after baseEjectionTime the same-zone pod takes the traffic again",
            LISTENER_FIXED_DR,
            6,
            &["(the guide: ejected endpoints return after the base ejection time)".into()],
            Expect::only(ABC, 6),
        )?;
        self.set(DEF, UpstreamState::Healthy, "us-east-1b healthy again")?;
        Ok(())
    }
}
