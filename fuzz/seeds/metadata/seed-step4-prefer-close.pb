
Ó
locality-failoverÿ
ƒ
	endpoints∂2≥
„*‡

address10.0.1.5:8080
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
„*‡

address10.0.2.8:8080
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
address10.20.0.9:8080
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
namein-ambient-8e9f0c7d65-ghi78

revision1