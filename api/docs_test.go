package api

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestGuideCoversTheDocument keeps docs/api.md and api/openapi.yaml in step:
// every documented route has a "### METHOD /path" section with a curl
// example using that method, and no section names a route the document
// lacks.
func TestGuideCoversTheDocument(t *testing.T) {
	doc := loadDoc(t)
	b, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{} // "METHOD /path" → section text
	heading := regexp.MustCompile(`(?m)^### ([A-Z]+ /\S*)\s*$`)
	idx := heading.FindAllStringSubmatchIndex(string(b), -1)
	for i, m := range idx {
		end := len(b)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		sections[string(b[m[2]:m[3]])] = string(b[m[1]:end])
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			r := method + " " + path
			documented[r] = true
			body, ok := sections[r]
			if !ok {
				t.Errorf("docs/api.md has no section for %s", r)
				continue
			}
			if !strings.Contains(body, "curl ") {
				t.Errorf("docs/api.md: %s has no curl example", r)
			}
			if method != "GET" && !strings.Contains(body, "-X"+method) && !strings.Contains(body, "--request "+method) {
				t.Errorf("docs/api.md: the example of %s does not use %s", r, method)
			}
		}
	}
	for r := range sections {
		if !documented[r] {
			t.Errorf("docs/api.md has a section for %s, which api/openapi.yaml does not describe", r)
		}
	}
}
