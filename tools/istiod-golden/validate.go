package istiodgolden

import (
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

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
			if doc := validateDocument(api, m.Name, text); doc != nil {
				docs = append(docs, doc)
			}
		}
	}
	out["documents"] = docs
	return out
}

// validateDocument validates one YAML document; nil for a document that is
// not Istio or Gateway API configuration (comments only, a core Kubernetes
// kind such as Service).
func validateDocument(api *istiocrd.Validator, file, text string) map[string]any {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(text), &head); err != nil || head.Kind == "" {
		return nil
	}
	doc := map[string]any{
		"file": file, "kind": head.Kind, "name": head.Metadata.Namespace + "/" + head.Metadata.Name,
		"apiServer": "ok", "webhook": "ok",
	}
	if err := api.ValidateCustomResourceYAML(text, nil); err != nil {
		doc["apiServer"] = err.Error()
	}
	cfgs, _, err := crd.ParseInputs(text)
	switch {
	case err != nil:
		doc["webhook"] = "istiod cannot parse it: " + err.Error()
	case len(cfgs) == 0:
		return nil // not an Istio or Gateway API kind
	default:
		s, found := collections.All.FindByGroupVersionAliasesKind(cfgs[0].GroupVersionKind)
		if !found {
			doc["webhook"] = "no schema for " + cfgs[0].GroupVersionKind.String()
			break
		}
		warn, err := s.ValidateConfig(cfgs[0])
		if err != nil {
			doc["webhook"] = err.Error()
		}
		if warn != nil {
			doc["warnings"] = warn.Error()
		}
	}
	return doc
}
