
ä
locality-failoverÙ
‡
	endpoints“2œ
Â*‚

address10.10.0.15:8080
ö
labelsè*å
/
topology.istio.io/networkcluster1-network
,
topology.kubernetes.io/region	us-east-1
+
topology.kubernetes.io/zone
us-east-1a
%
namein-ambient-7d8f9b6c54-abc12
‰*·

address10.20.0.7:8080
ö
labelsè*å
/
topology.istio.io/networkcluster2-network
,
topology.kubernetes.io/region	us-west-2
+
topology.kubernetes.io/zone
us-west-2a
%
namein-ambient-8e9f0c7d65-xyz98

revision1