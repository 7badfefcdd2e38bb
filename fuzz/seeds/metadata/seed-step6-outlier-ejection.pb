
ÿ
locality-failover¬
Æ
	endpoints†2ù
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
address10.10.1.8:8080
ö
labelsè*å
/
topology.istio.io/networkcluster1-network
,
topology.kubernetes.io/region	us-east-1
+
topology.kubernetes.io/zone
us-east-1b
%
namein-ambient-7d8f9b6c54-def34
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
‰*·

address10.20.1.4:8080
ö
labelsè*å
/
topology.istio.io/networkcluster2-network
,
topology.kubernetes.io/region	us-west-2
+
topology.kubernetes.io/zone
us-west-2b
%
namein-ambient-8e9f0c7d65-uvw56

revision1