package istiodgolden

import "testing"

// The validation in validation.json can fail: a WasmPlugin with both
// selector and targetRefs, one with a bad enum, and an EnvoyFilter patch
// without an operation are refused (API server: the first two; webhook: all).
func TestValidationRefusesBadManifests(t *testing.T) {
	bad := manifest{Name: "bad.yaml", Data: []byte(`apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: bad
  namespace: httpbin
spec:
  targetRefs:
    - {group: gateway.networking.k8s.io, kind: Gateway, name: httpbin-waypoint}
  selector:
    matchLabels: {app: x}
  url: oci://registry.example.com/x:1
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: bad-enum
  namespace: httpbin
spec:
  targetRefs:
    - {group: gateway.networking.k8s.io, kind: Gateway, name: httpbin-waypoint}
  url: oci://registry.example.com/x:1
  failStrategy: FAIL_SOMETIMES
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: bad
  namespace: httpbin
spec:
  configPatches:
    - applyTo: HTTP_FILTER
      patch:
        value: {name: x}
`)}
	out := validateManifests(t, []manifest{bad})
	docs, _ := out["documents"].([]any)
	if len(docs) != 3 {
		t.Fatalf("want 3 documents, got %v", out["documents"])
	}
	for _, d := range docs {
		doc := d.(map[string]any)
		if doc["kind"] == "WasmPlugin" && doc["apiServer"] == "ok" {
			t.Errorf("API-server validation accepted a bad WasmPlugin: %v", doc)
		}
		if doc["webhook"] == "ok" {
			t.Errorf("webhook validation accepted a bad %v: %v", doc["kind"], doc)
		}
		t.Logf("%v: apiServer=%v webhook=%v", doc["kind"], doc["apiServer"], doc["webhook"])
	}
}
