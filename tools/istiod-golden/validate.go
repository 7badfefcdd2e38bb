package istiodgolden

import (
	"path/filepath"
	"strings"
	"testing"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	istiocrd "istio.io/istio/pkg/config/crd"
	"istio.io/istio/pkg/config/schema/collections"
)

// validateManifests runs every envoy/istio/*.yaml document through Istio's
// two validations: the Kubernetes API server's (the CRD's OpenAPI schema and
// CEL rules, from Istio's own crd-all.gen.yaml) and istiod's validating
// webhook (the schema's ValidateConfig). The outcome goes into
// validation.json.
func validateManifests(t *testing.T, ms []manifest) map[string]any {
	_, src := istioModule(t)
	api, err := istiocrd.NewValidatorFromFiles(
		filepath.Join(src, "manifests/charts/base/files/crd-all.gen.yaml"),
		filepath.Join(src, "tests/integration/pilot/testdata/gateway-api-crd.yaml"),
	)
	if err != nil {
		t.Fatalf("CRD validator: %v", err)
	}
	out := map[string]any{
		"how": "each document through the Kubernetes API server's CRD validation (OpenAPI schema + CEL, " +
			"Istio's manifests/charts/base/files/crd-all.gen.yaml) and istiod's webhook validation " +
			"(pkg/config/schema collections ... ValidateConfig), at the Istio version in */meta.json",
		"istio": istioModuleVersion(t),
	}
	api.SkipMissing = true
	var docs []any
	for _, m := range ms {
		for _, text := range strings.Split(string(m.Data), "\n---\n") {
			cfgs, _, err := crd.ParseInputs(text)
			if err != nil {
				t.Fatalf("%s: Istio cannot parse it: %v", m.Name, err)
			}
			if len(cfgs) == 0 {
				continue // comments only, or a core Kubernetes kind (Service)
			}
			c := cfgs[0]
			doc := map[string]any{
				"file": m.Name, "kind": c.GroupVersionKind.Kind, "name": c.Namespace + "/" + c.Name,
				"apiServer": "ok", "webhook": "ok",
			}
			if err := api.ValidateCustomResourceYAML(text, nil); err != nil {
				doc["apiServer"] = err.Error()
			}
			s, found := collections.All.FindByGroupVersionAliasesKind(c.GroupVersionKind)
			if !found {
				doc["webhook"] = "no schema for " + c.GroupVersionKind.String()
			} else {
				warn, err := s.ValidateConfig(c)
				if err != nil {
					doc["webhook"] = err.Error()
				}
				if warn != nil {
					doc["warnings"] = warn.Error()
				}
			}
			docs = append(docs, doc)
		}
	}
	out["documents"] = docs
	return out
}
