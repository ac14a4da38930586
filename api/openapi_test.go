package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/matrx-dev/matrx/metrics"
)

// freeMaps are the only object schemas that may hold keys the document does
// not name: environment variables, labels, the agent's result and error
// details, and the OpenAPI document itself.
var freeMaps = map[string]bool{"StringMap": true, "FreeMap": true, "OpenAPIDocument": true}

func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPIYAML)
	if err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("api/openapi.yaml is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	return doc
}

// TestDocumentListsExactlyTheServedRoutes fails when the server serves a
// route the document lacks, or the document describes one nobody serves.
func TestDocumentListsExactlyTheServedRoutes(t *testing.T) {
	doc := loadDoc(t)
	s := &Server{metrics: metrics.New()}
	served := map[string]bool{}
	for _, rt := range s.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		// The mux's {name...} (rest of the path) is {name} in OpenAPI.
		path = strings.ReplaceAll(path, "...}", "}")
		served[method+" "+path] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	for _, r := range sortedKeys(served) {
		if !documented[r] {
			t.Errorf("served but not in api/openapi.yaml: %s", r)
		}
	}
	for _, r := range sortedKeys(documented) {
		if !served[r] {
			t.Errorf("in api/openapi.yaml but not served: %s", r)
		}
	}
}

// TestObjectSchemasAreClosed: every object schema forbids unknown fields,
// so a response field the document lacks fails validation; only the free
// maps are open. Path ids carry no pattern (any unknown id answers 404).
func TestObjectSchemasAreClosed(t *testing.T) {
	doc := loadDoc(t)
	seen := map[*openapi3.Schema]bool{}
	var walk func(where string, ref *openapi3.SchemaRef)
	walk = func(where string, ref *openapi3.SchemaRef) {
		if ref == nil || ref.Value == nil || seen[ref.Value] {
			return
		}
		s := ref.Value
		seen[s] = true
		name := ref.Ref[strings.LastIndex(ref.Ref, "/")+1:]
		if ref.Ref == "" {
			name = where[strings.LastIndex(where, "/")+1:] // a component itself
		}
		if s.Type.Includes("object") && !freeMaps[name] {
			if s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has || s.AdditionalProperties.Schema != nil {
				t.Errorf("%s: object schema without additionalProperties: false", where)
			}
		}
		for k, p := range s.Properties {
			walk(where+"."+k, p)
		}
		walk(where+"[]", s.Items)
		for i, o := range s.OneOf {
			walk(where+"|"+itoa(i), o)
		}
		for i, o := range s.AnyOf {
			walk(where+"|"+itoa(i), o)
		}
		for i, o := range s.AllOf {
			walk(where+"&"+itoa(i), o)
		}
		if !freeMaps[name] {
			walk(where+"{}", s.AdditionalProperties.Schema)
		}
	}
	for name, ref := range doc.Components.Schemas {
		walk("#/components/schemas/"+name, ref)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			for code, resp := range op.Responses.Map() {
				if resp.Value == nil {
					continue
				}
				for ct, mt := range resp.Value.Content {
					walk(where+" "+code+" "+ct, mt.Schema)
				}
			}
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for ct, mt := range op.RequestBody.Value.Content {
					walk(where+" request "+ct, mt.Schema)
				}
			}
			for _, p := range append(item.Parameters, op.Parameters...) {
				if p.Value != nil && p.Value.In == "path" && p.Value.Schema != nil && p.Value.Schema.Value.Pattern != "" {
					t.Errorf("%s: path parameter %s has a pattern; unknown ids must reach the server and answer 404", where, p.Value.Name)
				}
			}
		}
	}
	if len(seen) < 10 {
		t.Fatalf("walked only %d schemas: the walk is broken", len(seen))
	}
}

// TestDocumentIsServed: GET /openapi.json and /openapi.yaml serve the
// embedded document.
func TestDocumentIsServed(t *testing.T) {
	rec := httptest.NewRecorder()
	serveOpenAPIJSON(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	var v struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || !strings.HasPrefix(v.OpenAPI, "3.1") || v.Paths["/sandboxes"] == nil {
		t.Fatalf("openapi.json: %v %+v", err, v.OpenAPI)
	}
	rec = httptest.NewRecorder()
	serveOpenAPIYAML(rec, httptest.NewRequest(http.MethodGet, "/openapi.yaml", nil))
	if rec.Body.String() != string(openAPIYAML) || rec.Header().Get("Content-Type") != "application/yaml" {
		t.Fatal("openapi.yaml is not the embedded document")
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func itoa(i int) string { return string(rune('0' + i)) }
