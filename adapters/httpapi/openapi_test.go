package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestOpenAPICoversEveryRoute keeps the published document in step with
// the routes actually served.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	s := &Server{}
	served := map[string]bool{}
	for _, r := range s.routeTable() {
		if strings.HasPrefix(r.path, "/dashboard") || r.path == "/files/" || r.path == "/media/" || strings.HasPrefix(r.path, "/api/webhooks/fal/") {
			continue // the web page, not an API
		}
		key := strings.ToLower(r.method) + " " + r.path
		served[key] = true
		if _, ok := doc.Paths[r.path][strings.ToLower(r.method)]; !ok {
			t.Errorf("%s %s is served but not documented", r.method, r.path)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if !served[method+" "+path] {
				t.Errorf("%s %s is documented but not served", method, path)
			}
		}
	}
}
