package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"go.yaml.in/yaml/v3"
)

// openAPIYAML is api/openapi.yaml, the API's published contract. Tests hold
// the server to it: a route served but not documented (or the reverse), or
// a response field the document lacks, fails the suite.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// openAPIJSON is the same document as JSON, converted once.
var openAPIJSON = mustJSON(openAPIYAML)

// OpenAPIDocument returns the API's OpenAPI 3.1 document (YAML).
func OpenAPIDocument() []byte { return append([]byte(nil), openAPIYAML...) }

func mustJSON(y []byte) []byte {
	var doc any
	if err := yaml.Unmarshal(y, &doc); err != nil {
		panic(fmt.Sprintf("api/openapi.yaml is not YAML: %v", err))
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(fmt.Sprintf("api/openapi.yaml does not convert to JSON: %v", err))
	}
	return b
}

func serveOpenAPIJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIJSON)
}

func serveOpenAPIYAML(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(openAPIYAML)
}
