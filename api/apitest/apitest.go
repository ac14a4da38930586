// Package apitest holds matrxd's API to its published contract in tests:
// it loads api/openapi.yaml and wraps a client's transport so that every
// request and response that crosses it is validated against the document.
// A response field, status code or route the document lacks fails the
// test that caused it. It is test support only; production code must not
// import it.
//
// Rules it applies:
//   - every response is validated (status code, headers, body); statuses
//     the document does not list fail;
//   - a request is validated only when the daemon accepted it (status below
//     400): tests send invalid requests on purpose, and a rejection is the
//     right answer to those; an accepted request the document calls
//     invalid is a mismatch;
//   - application/x-ndjson bodies are validated line by line as the client
//     reads them, each line against the response's schema (which describes
//     one line);
//   - 101 Switching Protocols (WebSocket upgrades) is checked for being
//     documented; its frames are not;
//   - a body documented only as "*/*" (a sandbox app's answer through the
//     proxy) is checked for being documented; its content is not;
//   - a path parameter marked `x-rest-of-path: true` (the mux's
//     {name...}) matches the rest of the path, slashes included.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/matrx-dev/matrx/api"
)

// NDJSON is the content type of streamed responses.
const NDJSON = "application/x-ndjson"

// maxValidatedBody bounds what the validator buffers of one body; larger
// bodies (image archives, file downloads) are passed through unvalidated.
const maxValidatedBody = 8 << 20

// Document is the loaded, resolved OpenAPI document.
type Document struct {
	T      *openapi3.T
	router routers.Router
	rest   map[string]bool // rest-of-path parameter names
}

var (
	loadOnce sync.Once
	loaded   *Document
	loadErr  error
)

// Load parses and validates api/openapi.yaml (once per test binary).
func Load(t testing.TB) *Document {
	t.Helper()
	loadOnce.Do(func() { loaded, loadErr = Parse(api.OpenAPIDocument()) })
	if loadErr != nil {
		t.Fatalf("api/openapi.yaml: %v", loadErr)
	}
	return loaded
}

// Parse loads and validates an OpenAPI document.
func Parse(b []byte) (*Document, error) {
	l := openapi3.NewLoader()
	doc, err := l.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("invalid document: %w", err)
	}
	// The router sees rest-of-path parameters as the legacy router's
	// {name*}; the document itself keeps OpenAPI's {name}.
	routing, err := l.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	rest := map[string]bool{}
	for _, path := range routing.Paths.Keys() {
		item := routing.Paths.Value(path)
		renamed := path
		for _, p := range item.Parameters {
			if p.Value != nil && p.Value.In == "path" && p.Value.Extensions["x-rest-of-path"] == true {
				renamed = strings.Replace(renamed, "{"+p.Value.Name+"}", "{"+p.Value.Name+"*}", 1)
				rest[p.Value.Name] = true
			}
		}
		if renamed != path {
			routing.Paths.Delete(path)
			routing.Paths.Set(renamed, item)
		}
	}
	r, err := legacy.NewRouter(routing)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return &Document{T: doc, router: r, rest: rest}, nil
}

// Reporter receives validation failures (a *testing.T's Errorf).
type Reporter func(format string, args ...any)

// Transport returns a RoundTripper that validates every exchange through
// next against d and reports mismatches to report.
func (d *Document) Transport(next http.RoundTripper, report Reporter) http.RoundTripper {
	return &transport{doc: d, next: next, report: report}
}

type transport struct {
	doc    *Document
	next   http.RoundTripper
	report Reporter
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// Keep a copy of a small request body for validation.
	var reqBody []byte
	if req.Body != nil && req.Header.Get("Content-Type") == "application/json" {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	where := req.Method + " " + req.URL.Path
	route, params, ferr := t.doc.router.FindRoute(cloneForRoute(req, reqBody))
	if ferr != nil {
		// A route the document lacks may only be refused: 404 for an
		// unknown path, 405 for a known path with another method, with
		// the error body.
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return t.checkError(resp, where)
		}
		t.report("openapi: %s (answered %d) is not in api/openapi.yaml: %v", where, resp.StatusCode, ferr)
		return resp, nil
	}
	for name := range t.doc.rest {
		// The rest of the path may be empty (the app's root); OpenAPI has
		// no empty path parameter.
		if v, ok := params[name]; ok && v == "" {
			params[name] = "/"
		}
	}
	in := &openapi3filter.RequestValidationInput{
		Request: cloneForRoute(req, reqBody), PathParams: params, Route: route,
		Options: &openapi3filter.Options{
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			ExcludeRequestBody: reqBody == nil, MultiError: true,
		},
	}
	if resp.StatusCode < 400 {
		if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
			t.report("openapi: %s was accepted (%d) but the document calls the request invalid: %v", where, resp.StatusCode, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols || anyContent(route, resp.StatusCode):
		out.Options.ExcludeResponseBody = true
		if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
			t.report("openapi: %s upgrade: %v", where, err)
		}
	case strings.HasPrefix(ct, NDJSON):
		schema := t.doc.lineSchema(route, resp.StatusCode)
		if schema == nil {
			t.report("openapi: %s answered %d with %s, which the document does not list", where, resp.StatusCode, NDJSON)
			return resp, nil
		}
		resp.Body = &ndjsonChecker{rc: resp.Body, schema: schema, where: where, report: t.report, doc: t.doc.T}
	case resp.ContentLength > maxValidatedBody || strings.HasPrefix(ct, "application/octet-stream") || strings.HasPrefix(ct, "application/x-tar"):
		out.Options.ExcludeResponseBody = true
		if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
			t.report("openapi: %s response: %v", where, err)
		}
	default:
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxValidatedBody+1))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if len(b) > maxValidatedBody {
			return resp, nil
		}
		out.SetBodyBytes(b)
		if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
			t.report("openapi: %s response %d does not match the document: %v\nbody: %.2000s", where, resp.StatusCode, err, b)
		}
	}
	return resp, nil
}

// checkError validates an error answer to an undocumented route.
func (t *transport) checkError(resp *http.Response, where string) (*http.Response, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxValidatedBody))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	ref := t.doc.T.Components.Schemas["Error"]
	if ref == nil || ref.Value == nil {
		t.report("openapi: the document has no Error schema")
		return resp, nil
	}
	if err := ValidateJSON(ref.Value, b); err != nil {
		t.report("openapi: %s answered %d without the error shape: %v\nbody: %.1000s", where, resp.StatusCode, err, b)
	}
	return resp, nil
}

// cloneForRoute gives the router and the request validator a request whose
// body can be read again, and whose host is the document's server.
func cloneForRoute(req *http.Request, body []byte) *http.Request {
	c := req.Clone(req.Context())
	c.URL.Scheme, c.URL.Host, c.Host = "http", "matrxd", "matrxd"
	if body != nil {
		c.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		c.Body = http.NoBody
	}
	return c
}

// anyContent reports whether a response is documented only as "*/*":
// whatever a sandbox's app answered, passed through.
func anyContent(route *routers.Route, status int) bool {
	ref := route.Operation.Responses.Status(status)
	if ref == nil {
		ref = route.Operation.Responses.Default()
	}
	if ref == nil || ref.Value == nil || len(ref.Value.Content) != 1 {
		return false
	}
	return ref.Value.Content.Get("*/*") != nil && ref.Value.Content["*/*"] != nil
}

// lineSchema is the schema of one line of an NDJSON response.
func (d *Document) lineSchema(route *routers.Route, status int) *openapi3.Schema {
	ref := route.Operation.Responses.Status(status)
	if ref == nil || ref.Value == nil {
		return nil
	}
	mt := ref.Value.Content.Get(NDJSON)
	if mt == nil || mt.Schema == nil {
		return nil
	}
	return mt.Schema.Value
}

// ndjsonChecker validates each line of a streamed body as it is read.
type ndjsonChecker struct {
	rc     io.ReadCloser
	schema *openapi3.Schema
	doc    *openapi3.T
	where  string
	report Reporter
	line   []byte
	n      int
}

func (c *ndjsonChecker) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	data := p[:n]
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			c.line = append(c.line, data...)
			break
		}
		c.line = append(c.line, data[:i]...)
		c.check(c.line)
		c.line = c.line[:0]
		data = data[i+1:]
	}
	if err == io.EOF && len(bytes.TrimSpace(c.line)) > 0 {
		c.check(c.line)
		c.line = nil
	}
	return n, err
}

func (c *ndjsonChecker) check(line []byte) {
	c.n++
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if err := ValidateJSON(c.schema, line); err != nil {
		c.report("openapi: %s line %d does not match the document: %v\nline: %.1000s", c.where, c.n, err, line)
	}
}

func (c *ndjsonChecker) Close() error { return c.rc.Close() }

// ValidateJSON checks one JSON value against a schema with the document's
// JSON Schema dialect (2020-12, as OpenAPI 3.1 uses).
func ValidateJSON(s *openapi3.Schema, b []byte) error {
	v, err := decodeJSON(b)
	if err != nil {
		return err
	}
	return s.VisitJSON(v, openapi3.MultiErrors(), openapi3.EnableJSONSchema2020())
}

func decodeJSON(b []byte) (any, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return v, nil
}
