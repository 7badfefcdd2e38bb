// Package istiodgolden feeds istiod's own configuration generator (Istio's
// fake discovery server, the one Istio's tests use) the guide's objects and
// this repository's envoy/istio/ manifests, and writes what the waypoint
// httpbin-waypoint would receive as JSON golden files into
// tests/golden/istiod/ (see README.md there).
//
//	ISTIOD_GOLDEN_WRITE=1 go test ./...   writes the files
//	go test ./...                         checks the committed files are current
package istiodgolden

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"istio.io/api/label"
	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/model"
	labelutil "istio.io/istio/pilot/pkg/serviceregistry/util/label"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/network"
	"istio.io/istio/pkg/test"

	// Registers every Envoy extension type, so Any fields print as JSON.
	_ "istio.io/istio/pkg/config/xds"
)

const (
	outDir       = "../../tests/golden/istiod"
	manifestsDir = "../../envoy/istio"
	// The manifest fed to istiod with the guide's objects (the others in
	// envoy/istio/ are alternatives with the same WasmPlugin name; they are
	// validated only).
	fedManifest = "waypoint.yaml"
	// The Istio version the generated proxy claims to run (istiod's own, the
	// pinned master after the 1.31 branch: VERSION 1.32).
	proxyIstioVersion = "1.32.0"
)

// goldenCase is one set of golden files.
type goldenCase struct {
	Name         string
	Description  string
	Distribution string   // the Service's traffic-distribution annotation
	DROrder      []string // the DestinationRule's failoverPriority; nil: no DestinationRule
	AuthzPolicy  bool     // add an ALLOW AuthorizationPolicy on the waypoint
	MultiNetwork bool
}

var cases = []goldenCase{
	{Name: "no-dr", Description: "guide step 5: waypoint, no DestinationRule, no traffic distribution"},
	{Name: "prefer-close", Description: "guide step 4: Service annotated networking.istio.io/traffic-distribution=PreferClose, no DestinationRule", Distribution: "PreferClose"},
	{Name: "step6", Description: "guide step 6 DestinationRule verbatim: failoverPriority [zone, region], outlierDetection", DROrder: []string{labelZone, labelRegion}},
	{Name: "network-region-zone", Description: "guide step 6 DestinationRule with failoverPriority [network, region, zone] (the fix this repository recommends)", DROrder: []string{labelNetwork, labelRegion, labelZone}},
	{Name: "multi-network", Description: "network-region-zone with ambient multi-network on (AMBIENT_ENABLE_MULTI_NETWORK) and an east-west gateway for cluster2-network: the waypoint reaches cluster-2 pods through it", DROrder: []string{labelNetwork, labelRegion, labelZone}, MultiNetwork: true},
	{Name: "authz", Description: "network-region-zone plus an ALLOW AuthorizationPolicy on the waypoint: where the plugin sits relative to RBAC", DROrder: []string{labelNetwork, labelRegion, labelZone}, AuthzPolicy: true},
}

func TestGolden(t *testing.T) {
	if !features.EnableAmbient {
		t.Fatal("run with PILOT_ENABLE_AMBIENT=true (as istiod runs in an ambient install); `make istiod-golden` does")
	}
	write := os.Getenv("ISTIOD_GOLDEN_WRITE") != ""
	manifests := readManifests(t)
	validation := validateManifests(t, manifests)
	emit(t, write, "validation.json", validation)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			files := generate(t, c, manifests)
			for name, v := range files {
				emit(t, write, filepath.Join(c.Name, name), v)
			}
		})
	}
}

// manifest is one envoy/istio/*.yaml file, as bytes.
type manifest struct {
	Name string
	Data []byte
}

func readManifests(t *testing.T) []manifest {
	paths, err := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestsDir, err)
	}
	sort.Strings(paths)
	out := make([]manifest, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, manifest{Name: "envoy/istio/" + filepath.Base(p), Data: data})
	}
	return out
}

func fnv1a64(data []byte) string {
	h := fnv.New64a()
	h.Write(data)
	return fmt.Sprintf("%016x", h.Sum64())
}

// istioModule is istio.io/istio as this module resolves it: its version
// (the one go.mod pins) and its source directory (for the CRDs).
func istioModule(t *testing.T) (version, dir string) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}} {{.Dir}}", "istio.io/istio").Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/istio: %v", err)
	}
	version, dir, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	if version == "" || dir == "" {
		t.Fatalf("go list -m istio.io/istio: %q", out)
	}
	return version, dir
}

func istioModuleVersion(t *testing.T) string {
	v, _ := istioModule(t)
	return v
}

// objectsYAML is every object of a case except our manifest.
func objectsYAML(c goldenCase) string {
	docs := []string{nsYAML, gatewayYAML, waypointServiceYAML, serviceYAML(c.Distribution)}
	docs = append(docs, workloadEntryYAML(waypointPod, map[string]string{
		label.IoK8sNetworkingGatewayGatewayName.Name: waypoint,
	}))
	for _, e := range endpoints {
		docs = append(docs, workloadEntryYAML(e, map[string]string{"app": serviceName}))
	}
	if c.DROrder != nil {
		docs = append(docs, destinationRuleYAML(c.DROrder))
	}
	if c.AuthzPolicy {
		docs = append(docs, authzYAML)
	}
	if c.MultiNetwork {
		docs = append(docs, systemNamespaceYAML)
	}
	return joinYAML(docs...)
}

// proxyLabels are the waypoint's labels as istiod completes them
// (AugmentLabels: cluster, network, region, zone, node).
func proxyLabels() map[string]string {
	in := map[string]string{
		label.IoK8sNetworkingGatewayGatewayName.Name: waypoint,
		label.GatewayManaged.Name:                    constants.ManagedGatewayMeshControllerLabel,
	}
	return labelutil.AugmentLabels(in, clusterID, waypointPod.Region+"/"+waypointPod.Zone,
		"node-"+waypointPod.Zone, network.ID(waypointPod.Network))
}

func generate(t *testing.T, c goldenCase, manifests []manifest) map[string]any {
	if c.MultiNetwork {
		test.SetForTest(t, &features.EnableAmbientMultiNetwork, true)
	}
	var fed manifest
	for _, m := range manifests {
		if m.Name == "envoy/istio/"+fedManifest {
			fed = m
		}
	}
	if fed.Data == nil {
		t.Fatalf("%s missing", fedManifest)
	}
	objects := objectsYAML(c)
	// Istio configuration (parsed as istiod's CRD client does): the objects
	// and our manifest, verbatim. Kubernetes objects (for the registries and
	// the ambient index): the objects.
	var gateways []model.NetworkGateway
	if c.MultiNetwork {
		gateways = []model.NetworkGateway{eastWestGateway}
	}
	d := xds.NewFakeDiscoveryServer(t, xds.FakeOptions{
		Gateways:               gateways,
		DefaultClusterName:     clusterID,
		ConfigString:           joinYAML(objects, string(fed.Data)),
		KubernetesObjectString: objects,
		MeshConfig:             meshConfig(),
	})
	labels := proxyLabels()
	proxy := d.SetupProxy(&model.Proxy{
		Type:            model.Waypoint,
		ID:              waypointPod.Name + "." + namespace,
		ConfigNamespace: namespace,
		DNSDomain:       namespace + ".svc.cluster.local",
		Labels:          labels,
		Locality:        &core.Locality{Region: waypointPod.Region, Zone: waypointPod.Zone},
		IPAddresses:     []string{waypointPod.IP},
		Metadata: &model.NodeMetadata{
			Network:      network.ID(waypointPod.Network),
			ClusterID:    clusterID,
			Namespace:    namespace,
			Labels:       labels,
			IstioVersion: proxyIstioVersion,
		},
	})

	listeners := d.Listeners(proxy)
	clusters := d.Clusters(proxy)
	eds := d.Endpoints(proxy)
	routes := d.Routes(proxy)
	listenersJSON := protoList(t, listeners)
	ecdsJSON := protoList(t, ecdsOf(d, proxy, listenersJSON))

	meta := map[string]any{
		"case":        c.Name,
		"description": c.Description,
		"generator":   "tools/istiod-golden (make istiod-golden)",
		"istio": map[string]any{
			"module":  "istio.io/istio",
			"version": istioModuleVersion(t),
			"note":    "master after the release-1.31 branch (VERSION 1.32); the Go module proxy serves no Istio release tag",
		},
		"go":              runtime.Version(),
		"env":             map[string]any{"PILOT_ENABLE_AMBIENT": os.Getenv("PILOT_ENABLE_AMBIENT"), "AMBIENT_ENABLE_MULTI_NETWORK": features.EnableAmbientMultiNetwork},
		"networkGateways": gateways,
		"fed":             []string{fed.Name},
		"fnv1a64":         manifestHashes(manifests),
		"files": map[string]string{
			"objects.yaml":   "the guide's objects fed to istiod with the fed manifests (verbatim)",
			"inputs.json":    "the same objects as data: proxy labels, endpoints, trafficPolicy, trafficDistribution",
			"listeners.json": "LDS for the waypoint",
			"clusters.json":  "CDS for the waypoint",
			"endpoints.json": "EDS (ClusterLoadAssignment) of every EDS cluster",
			"routes.json":    "RDS referenced by the listeners (empty when routes are inline)",
			"ecds.json":      "ECDS: the extension configs the listeners reference (the WasmPlugin)",
		},
	}
	return map[string]any{
		"meta.json":      meta,
		"objects.yaml":   objects,
		"inputs.json":    inputs(c, labels),
		"listeners.json": listenersJSON,
		"clusters.json":  protoList(t, clusters),
		"endpoints.json": protoList(t, eds),
		"routes.json":    protoList(t, routes),
		"ecds.json":      normalizeResourceVersion(ecdsJSON),
	}
}

// eastWestGateway is cluster 2's east-west gateway, as istiod knows it in a
// multi-network mesh (its network, cluster, address, HBONE port).
var eastWestGateway = model.NetworkGateway{
	Network:   "cluster2-network",
	Cluster:   "cluster2",
	Addr:      "172.18.0.20",
	Port:      15443,
	HBONEPort: 15008,
}

// meshConfig is Istio's default mesh config plus what the istiod Helm chart
// adds by default (manifests/charts/istio-control/istio-discovery/templates/
// configmap.yaml: defaultProviders.metrics [prometheus], the istio.stats filter).
func meshConfig() *meshconfig.MeshConfig {
	mc := mesh.DefaultMeshConfig()
	mc.DefaultProviders = &meshconfig.MeshConfig_DefaultProviders{Metrics: []string{"prometheus"}}
	return mc
}

// ecdsOf is what istiod's ECDS generator answers for every extension config
// the listeners reference (pilot/pkg/xds/ecds.go, without pull secrets).
func ecdsOf(d *xds.FakeDiscoveryServer, proxy *model.Proxy, listeners []any) []*core.TypedExtensionConfig {
	return d.ConfigGen.BuildExtensionConfiguration(proxy, d.PushContext(), configDiscoveryNames(listeners), nil)
}

// normalizeResourceVersion replaces the WasmPlugin object's resource version
// (the in-memory config store's creation time) by a constant, so that
// regenerating gives the same bytes. The only edit made to istiod's output.
func normalizeResourceVersion(v []any) []any {
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"]; ok {
				x["ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"] = "NORMALIZED-BY-ISTIOD-GOLDEN"
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return v
}

func manifestHashes(ms []manifest) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		out[m.Name] = fnv1a64(m.Data)
	}
	return out
}

func inputs(c goldenCase, labels map[string]string) map[string]any {
	eps := make([]map[string]any, 0, len(endpoints))
	for _, e := range endpoints {
		eps = append(eps, map[string]any{
			"name":     e.Name,
			"address":  fmt.Sprintf("%s:%d", e.IP, targetPort),
			"locality": e.Region + "/" + e.Zone,
			"labels": map[string]string{
				"app": serviceName, labelNetwork: e.Network, labelRegion: e.Region, labelZone: e.Zone,
			},
		})
	}
	var tp any
	if c.DROrder != nil {
		tp = trafficPolicyJSON(c.DROrder)
	}
	var td any
	if c.Distribution != "" {
		td = c.Distribution
	}
	return map[string]any{
		"proxy": map[string]any{
			"labels":   labels,
			"locality": map[string]string{"region": waypointPod.Region, "zone": waypointPod.Zone},
			"network":  waypointPod.Network,
		},
		"service":             map[string]any{"host": serviceHost, "port": servicePort, "targetPort": targetPort},
		"cluster":             fmt.Sprintf("inbound-vip|%d|http|%s", servicePort, serviceHost),
		"trafficPolicy":       tp,
		"trafficDistribution": td,
		"endpoints":           eps,
	}
}

// protoList renders messages as plain JSON with Envoy's field names
// (snake_case, as in an Envoy config file), stable key order.
func protoList[T proto.Message](t *testing.T, msgs []T) []any {
	out := make([]any, 0, len(msgs))
	m := protojson.MarshalOptions{UseProtoNames: true}
	for _, msg := range msgs {
		b, err := m.Marshal(msg)
		if err != nil {
			t.Fatalf("marshal %T: %v", msg, err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// configDiscoveryNames lists the names of the filters that Envoy gets by ECDS.
func configDiscoveryNames(v any) []string {
	set := map[string]bool{}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["config_discovery"]; ok {
				if n, ok := x["name"].(string); ok {
					set[n] = true
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return sortedKeys(set)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// emit writes (or, without ISTIOD_GOLDEN_WRITE, compares) one golden file.
func emit(t *testing.T, write bool, rel string, v any) {
	t.Helper()
	var data []byte
	if s, ok := v.(string); ok {
		data = []byte(s)
	} else {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", " ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		data = buf.Bytes()
	}
	path := filepath.Join(outDir, rel)
	if write {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(old, data) {
		t.Errorf("%s is not what istiod generates now (run `make istiod-golden`)", strings.TrimPrefix(path, "../../"))
	}
}
