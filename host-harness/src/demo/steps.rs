//! The guide's steps as data: a table of [`Action`]s that [`Demo::play`]
//! runs in order. Each guide step is one function returning its rows, so a
//! reader sees the guide's script and nothing else; a second driver (e.g.
//! one on docker-compose) can play the same table.

use super::*;

/// One row of the demo's script.
#[derive(Clone, Debug)]
pub enum Action {
    /// A banner: a guide step on `listener`, with what the guide says.
    Heading {
        title: &'static str,
        listener: &'static str,
        text: &'static str,
    },
    /// Only `present` pods stay in the cluster (a scale or a pod deletion).
    Scale {
        present: &'static [&'static str],
        what: &'static str,
    },
    /// Prints the filter's ranking of the present pods for `listener`.
    Ranking(&'static str),
    /// A paragraph printed as it is.
    Note(&'static str),
    /// Sends requests and checks where they went.
    Phase(Phase),
    /// A pod's app starts answering as `state`.
    Set {
        pod: &'static str,
        state: Behavior,
        what: &'static str,
    },
    /// Remembers now as the moment of an ejection (for [`Action::WaitForReturn`]).
    MarkEjection,
    /// Remembers the filter's `unejections` counter (for [`Action::WaitForReturn`]).
    CountReturns,
    /// Waits until the filter returns `pod` from ejection; prints `if_late`
    /// when it does not in time.
    WaitForReturn {
        pod: &'static str,
        if_late: Option<&'static str>,
    },
}

/// One checked phase: `requests` requests on `listener`, what the guide
/// shows for them, and what must happen.
#[derive(Clone, Debug)]
pub struct Phase {
    pub id: &'static str,
    pub title: &'static str,
    pub listener: &'static str,
    pub requests: usize,
    pub guide: Vec<String>,
    pub expect: Expect,
}

fn phase(
    id: &'static str,
    title: &'static str,
    listener: &'static str,
    requests: usize,
    guide: Vec<String>,
    expect: Expect,
) -> Action {
    Action::Phase(Phase {
        id,
        title,
        listener,
        requests,
        guide,
        expect,
    })
}

/// The whole script: the guide's steps 3, 4 and 6, then step 6 fixed.
pub fn guide_steps() -> Vec<Action> {
    [step3(), step4(), step6(), step6_fixed()].concat()
}

fn step3() -> Vec<Action> {
    use Action::*;
    vec![
        Heading {
            title: "Step 3: default multicluster L4 failover (PreferNetwork)",
            listener: LISTENER_STEP3,
            text: "The Service has no traffic distribution: PreferNetwork, same network first.\n\
             (The guide's ztunnel makes this choice at L4; here the filter makes it.)",
        },
        Scale {
            present: &[ABC, XYZ],
            what: "cluster 1 runs in-ambient with 1 replica (us-east-1a), cluster 2 with 1 (us-west-2a)",
        },
        Ranking(LISTENER_STEP3),
        phase(
            "3a",
            "cluster 1 healthy: responses from the local cluster",
            LISTENER_STEP3,
            10,
            vec![format!("{ABC}   (on every line)")],
            Expect::only(ABC, 10),
        ),
        Scale {
            present: &[XYZ],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        },
        Ranking(LISTENER_STEP3),
        phase(
            "3b",
            "cluster 1 scaled to 0: failover to cluster 2",
            LISTENER_STEP3,
            5,
            vec![format!("{XYZ}   (5 lines)")],
            Expect::only(XYZ, 5),
        ),
        Scale {
            present: &[ABC, XYZ],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=1",
        },
        phase(
            "3c",
            "scaled back to 1: traffic returns to cluster 1",
            LISTENER_STEP3,
            10,
            vec!["(the guide scales back up without sending requests)".into()],
            Expect::only(ABC, 10),
        ),
    ]
}

fn step4() -> Vec<Action> {
    use Action::*;
    vec![
        Heading {
            title: "Step 4: zone-aware traffic distribution (PreferClose)",
            listener: LISTENER_STEP4,
            text: "in-ambient is annotated networking.istio.io/traffic-distribution=PreferClose:\n\
             same zone, then same region, then other regions.",
        },
        Scale {
            present: &[ABC, DEF, XYZ],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2\n\
             (pods in us-east-1a and us-east-1b; cluster 2 keeps its pod in us-west-2a)",
        },
        Ranking(LISTENER_STEP4),
        phase(
            "4a",
            "all healthy: the pod in the client's zone",
            LISTENER_STEP4,
            10,
            vec![format!("     10 {ABC}")],
            Expect::only(ABC, 10),
        ),
        Scale {
            present: &[DEF, XYZ],
            what: "$ kubectl --context=${context1} delete pod -n httpbin in-ambient-7d8f9b6c54-abc12\n\
             (as in the guide, the moment the zone has no pod; a Deployment would start a new one)",
        },
        Ranking(LISTENER_STEP4),
        phase(
            "4b",
            "same-zone pod deleted: same region, other zone",
            LISTENER_STEP4,
            10,
            vec![format!("     10 {DEF}")],
            Expect::only(DEF, 10),
        ),
        Scale {
            present: &[XYZ],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        },
        Ranking(LISTENER_STEP4),
        phase(
            "4c",
            "region empty: other region (cluster 2)",
            LISTENER_STEP4,
            10,
            vec![
                "     10 in-ambient-8e9f0c7d65-ghi78".into(),
                format!(
                    "(the guide's name for the cluster-2 pod here; steps 3 and 6 call it {XYZ})"
                ),
            ],
            Expect::only(XYZ, 10),
        ),
        Scale {
            present: &[ABC, DEF, XYZ],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2",
        },
        phase(
            "4d",
            "scaled back to 2: the same zone again",
            LISTENER_STEP4,
            10,
            vec!["(the guide scales back without sending requests)".into()],
            Expect::only(ABC, 10),
        ),
    ]
}

// Long on purpose: one guide step as data, rows in the order the guide
// reads; splitting it would only hide that order.
fn step6() -> Vec<Action> {
    use Action::*;
    vec![
        Heading {
            title: "Step 6: DestinationRule with explicit failover priority, as the guide writes it",
            listener: LISTENER_GUIDE_DR,
            text: "DestinationRule in-ambient-failover: failoverPriority [topology.kubernetes.io/zone,\n\
             topology.kubernetes.io/region], ROUND_ROBIN, outlierDetection consecutive5xxErrors 5,\n\
             interval 10s (1s here), baseEjectionTime 3m (3s here), maxEjectionPercent 50.\n\
             The guide says: \"same zone first, then same region, then other regions\".",
        },
        Scale {
            present: &[ABC, DEF, XYZ, UVW],
            what: "cluster 2 runs 2 replicas, in us-west-2a and us-west-2b, as the step-6 diagram shows",
        },
        Note(
            "\n    Istio's rule (and the filter's): walk the labels in order; the FIRST label that differs\n\
             \x20   decides. For the us-east-1b pod the zone differs already, exactly as for the us-west-2\n\
             \x20   pods: all three share one priority. The region label is never reached.",
        ),
        Ranking(LISTENER_GUIDE_DR),
        phase(
            "6a",
            "all healthy: same zone",
            LISTENER_GUIDE_DR,
            5,
            vec!["(the guide starts from here)".into()],
            Expect::only(ABC, 5),
        ),
        Scale {
            present: &[XYZ, UVW],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=0",
        },
        phase(
            "6b",
            "cluster 1 scaled to 0: failover to cluster 2, by the failover priority",
            LISTENER_GUIDE_DR,
            5,
            vec![
                format!("{XYZ}   (5 lines)"),
                "(here round robin over both cluster-2 pods; the guide's example shows one)".into(),
            ],
            Expect::spread(&[XYZ, UVW], 5),
        ),
        Scale {
            present: &[ABC, DEF, XYZ, UVW],
            what: "$ kubectl --context=${context1} scale deployment in-ambient -n httpbin --replicas=2",
        },
        Set {
            pod: ABC,
            state: Behavior::Http(503),
            what: "the app in us-east-1a starts failing: every request answers 503",
        },
        phase(
            "6c",
            "THE PITFALL: same-zone pod fails; ejected after 5 x 503; where does the rest go?",
            LISTENER_GUIDE_DR,
            10,
            vec![
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
        ),
        MarkEjection,
        CountReturns,
        Set {
            pod: ABC,
            state: Behavior::Healthy,
            what: "us-east-1a healthy again",
        },
        // The filter's metrics are shared by the listeners: let this
        // ejection end before the next listener ejects anything.
        WaitForReturn {
            pod: ABC,
            if_late: None,
        },
    ]
}

// Long on purpose: one guide step as data (see `step6`).
fn step6_fixed() -> Vec<Action> {
    use Action::*;
    let fails = "the app in us-east-1a starts failing: every request answers 503";
    vec![
        Heading {
            title: "Step 6, fixed: failoverPriority [network, region, zone]",
            listener: LISTENER_FIXED_DR,
            text: "The same DestinationRule with failoverPriority [topology.istio.io/network,\n\
             topology.kubernetes.io/region, topology.kubernetes.io/zone]: now a pod of another zone\n\
             of us-east-1 differs only at the last label and ranks before cluster 2 -- what the guide\n\
             means by \"same zone, then same region, then other regions\" (`host-harness lint` and the\n\
             filter's configure-time warning suggest this order).",
        },
        Ranking(LISTENER_FIXED_DR),
        phase(
            "6d",
            "all healthy: same zone",
            LISTENER_FIXED_DR,
            4,
            vec!["(as 6a)".into()],
            Expect::only(ABC, 4),
        ),
        Set {
            pod: ABC,
            state: Behavior::Http(503),
            what: fails,
        },
        phase(
            "6e",
            "same-zone pod fails: ejected after 5 x 503, then the same region",
            LISTENER_FIXED_DR,
            10,
            vec![
                "(the guide: \"eject endpoints after 5 consecutive 5xx errors\"; then same region)"
                    .into(),
            ],
            Expect {
                exact: vec![(ABC, 5), (DEF, 5)],
                spread: vec![],
                spread_total: 0,
                client_errors: 5,
            },
        ),
        MarkEjection,
        Set {
            pod: ABC,
            state: Behavior::Healthy,
            what: "us-east-1a recovers",
        },
        phase(
            "6f",
            "recovered, but still ejected inside baseEjectionTime",
            LISTENER_FIXED_DR,
            6,
            vec!["(the guide: ejected for a 3-minute base ejection time)".into()],
            Expect::only(DEF, 6),
        ),
        Set {
            pod: DEF,
            state: Behavior::Refused,
            what: "us-east-1b fails too: its pod refuses connections (a connect failure counts as 503)",
        },
        phase(
            "6g",
            "both cluster-1 zones down: after 5 failures the traffic leaves the region",
            LISTENER_FIXED_DR,
            9,
            vec![
                "(the guide's diagram: us-east-1a unavailable -> \"failover to next region\")"
                    .into(),
            ],
            Expect {
                exact: vec![(DEF, 5)],
                spread: vec![XYZ, UVW],
                spread_total: 4,
                client_errors: 5,
            },
        ),
        CountReturns,
        WaitForReturn {
            pod: ABC,
            if_late: Some("    (the check below will show where the traffic went instead)"),
        },
        phase(
            "6h",
            "after baseEjectionTime the same-zone pod takes the traffic again",
            LISTENER_FIXED_DR,
            6,
            vec!["(the guide: ejected endpoints return after the base ejection time)".into()],
            Expect::only(ABC, 6),
        ),
        Set {
            pod: DEF,
            state: Behavior::Healthy,
            what: "us-east-1b healthy again",
        },
    ]
}

impl Demo<'_> {
    /// Plays `actions` in order; stops at the first that cannot run.
    pub(crate) fn play(&mut self, actions: Vec<Action>) -> Result<()> {
        let mut ejected_at = Instant::now();
        let mut returns_before = 0;
        for action in actions {
            match action {
                Action::Heading {
                    title,
                    listener,
                    text,
                } => self.heading(title, listener, text),
                Action::Scale { present, what } => self.scale(present, what)?,
                Action::Ranking(listener) => self.ranking(listener)?,
                Action::Note(text) => println!("{text}"),
                Action::Phase(p) => self.phase(p)?,
                Action::Set { pod, state, what } => self.set(pod, state, what)?,
                Action::MarkEjection => ejected_at = Instant::now(),
                Action::CountReturns => returns_before = self.metric("unejections"),
                Action::WaitForReturn { pod, if_late } => {
                    let returned = self.wait_for_return(pod, ejected_at, returns_before);
                    if let (false, Some(text)) = (returned, if_late) {
                        println!("{text}");
                    }
                }
            }
        }
        Ok(())
    }
}
