package istiodgolden

import (
	"fmt"
	"strings"
)

// The guide's objects (../../../shared/reference/multicluster-zone-region-failover-guide.txt),
// as the Kubernetes and Istio resources istiod would read in cluster 1.

const (
	namespace   = "httpbin"
	serviceName = "in-ambient"
	waypoint    = "httpbin-waypoint"
	clusterID   = "cluster1"
	// The in-ambient Service's hostname in open-source Istio. The guide's
	// global hostname in-ambient.httpbin.mesh.internal is made by its vendor's
	// control plane, which istiod alone does not have.
	serviceHost = "in-ambient.httpbin.svc.cluster.local"
	servicePort = 8000
	targetPort  = 8080

	labelNetwork = "topology.istio.io/network"
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
)

// endpointSpec is one in-ambient pod of the guide, on a node of its zone.
type endpointSpec struct {
	Name    string `json:"name"`
	IP      string `json:"ip"`
	Region  string `json:"region"`
	Zone    string `json:"zone"`
	Network string `json:"network"`
}

// The guide's pod names; the addresses are those of envoy/istio/override-host.yaml.
var endpoints = []endpointSpec{
	{"in-ambient-7d8f9b6c54-abc12", "10.10.0.15", "us-east-1", "us-east-1a", "cluster1-network"},
	{"in-ambient-7d8f9b6c54-def34", "10.10.1.8", "us-east-1", "us-east-1b", "cluster1-network"},
	{"in-ambient-8e9f0c7d65-xyz98", "10.20.0.7", "us-west-2", "us-west-2a", "cluster2-network"},
	{"in-ambient-8e9f0c7d65-uvw56", "10.20.1.4", "us-west-2", "us-west-2b", "cluster2-network"},
}

// The waypoint's own pod: cluster 1, us-east-1a.
var waypointPod = endpointSpec{"httpbin-waypoint-6c7d8e9f0a-wp001", "10.10.0.2", "us-east-1", "us-east-1a", "cluster1-network"}

const nsYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: httpbin
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: httpbin-waypoint
`

// Step 5 of the guide, verbatim, plus the status address the Gateway
// controller would write.
const gatewayYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: httpbin-waypoint
  namespace: httpbin
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
    allowedRoutes:
      namespaces:
        from: Same
status:
  addresses:
  - type: Hostname
    value: httpbin-waypoint.httpbin.svc.cluster.local
`

// The Service istiod's gateway controller creates for the waypoint.
const waypointServiceYAML = `apiVersion: v1
kind: Service
metadata:
  name: httpbin-waypoint
  namespace: httpbin
  labels:
    gateway.istio.io/managed: istio.io-mesh-controller
    gateway.networking.k8s.io/gateway-name: httpbin-waypoint
    istio.io/gateway-name: httpbin-waypoint
spec:
  clusterIP: 10.96.0.10
  ports:
  - appProtocol: hbone
    name: mesh
    port: 15008
  selector:
    gateway.networking.k8s.io/gateway-name: httpbin-waypoint
`

// serviceYAML is the guide's in-ambient Service; distribution is the value of
// the networking.istio.io/traffic-distribution annotation (step 4), or "".
func serviceYAML(distribution string) string {
	ann := ""
	if distribution != "" {
		ann = fmt.Sprintf("  annotations:\n    networking.istio.io/traffic-distribution: %s\n", distribution)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: in-ambient
  namespace: httpbin
  labels:
    app: in-ambient
    istio.io/use-waypoint: httpbin-waypoint
%sspec:
  clusterIP: 10.96.0.100
  ports:
  - name: http
    port: %d
    targetPort: %d
  selector:
    app: in-ambient
`, ann, servicePort, targetPort)
}

// workloadEntryYAML places one pod: its locality and network as istiod
// learns them for a pod on a labelled node of that cluster.
func workloadEntryYAML(e endpointSpec, labels map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: %s
  namespace: httpbin
  labels:
`, e.Name)
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(&b, "    %s: %s\n", k, labels[k])
	}
	fmt.Fprintf(&b, `  annotations:
    ambient.istio.io/redirection: enabled
spec:
  address: %s
  locality: %s/%s
  network: %s
`, e.IP, e.Region, e.Zone, e.Network)
	return b.String()
}

// destinationRuleYAML is the guide's step-6 DestinationRule with the given
// failoverPriority order, on the in-ambient Service's hostname.
func destinationRuleYAML(order []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: in-ambient-failover
  namespace: httpbin
spec:
  host: %s
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failoverPriority:
`, serviceHost)
	for _, l := range order {
		fmt.Fprintf(&b, "        - %s\n", l)
	}
	b.WriteString(`      simple: ROUND_ROBIN
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 3m
      maxEjectionPercent: 50
`)
	return b.String()
}

// trafficPolicyJSON is the same trafficPolicy as JSON (inputs.json), so the
// Rust tests rank with exactly what istiod was given.
func trafficPolicyJSON(order []string) map[string]any {
	return map[string]any{
		"loadBalancer": map[string]any{
			"localityLbSetting": map[string]any{"enabled": true, "failoverPriority": order},
			"simple":            "ROUND_ROBIN",
		},
		"outlierDetection": map[string]any{
			"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m", "maxEjectionPercent": 50,
		},
	}
}

// systemNamespaceYAML names cluster 1's network, as a multi-network install
// labels istio-system.
const systemNamespaceYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
  labels:
    topology.istio.io/network: cluster1-network
`

// authzYAML allows everything from the httpbin namespace through the
// waypoint: it only makes istiod add its RBAC filter.
const authzYAML = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-httpbin
  namespace: httpbin
spec:
  targetRefs:
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: httpbin-waypoint
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: ["httpbin"]
`

func joinYAML(docs ...string) string {
	return strings.Join(docs, "\n---\n")
}
