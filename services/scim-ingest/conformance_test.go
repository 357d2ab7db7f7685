package scimingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// The conformance suites are the requests real IdPs and their published test suites send, one JSON
// fixture per request under testdata/conformance/<suite>/NN-name.json (scim-idp-requests.md §1–§4):
//
//	okta-spec            Okta's SCIM 2.0 SPEC test (Runscope), every step of §2.3, plus what Okta sends (§2.1)
//	entra-tutorial       the requests of Entra's SCIM tutorial (§1.2) without aadOptscim062020
//	entra-tutorial-flag  the same with ?aadOptscim062020 (§1.3 shapes)
//	entra-logicapp       Entra's gallery validation Logic App tests (§1.6) and validator shapes (§1.5)
//	postman              Microsoft's Postman collection, PostmanCollection.json, request by request
//	postman-inbound      SCIM-Inbound.postman_collection.json (API-driven provisioning)
//	onelogin, jumpcloud  their shapes (§3, §4), JumpCloud's test-connection create/delete included
//
// A suite's fixtures run in file order against one service, so later requests use ids captured from
// earlier responses ({{name}} in the path, headers and body). Each fixture asserts the response and
// every event the request caused: the resource events in order, then its provisioning-log record.

// fixture is one request of a conformance suite and what it must cause.
type fixture struct {
	Source  string `json:"source"` // the suite step or document the request comes from
	Note    string `json:"note,omitempty"`
	Request struct {
		Method  string            `json:"method"`
		Path    string            `json:"path"` // below the SCIM base, with the query as the IdP sends it
		Headers map[string]string `json:"headers,omitempty"`
		// Body is the JSON body; RawBody a body sent verbatim (junk the IdP sends).
		Body    json.RawMessage `json:"body,omitempty"`
		RawBody *string         `json:"rawBody,omitempty"`
		// NoContentType sends no Content-Type header (Entra has done so).
		NoContentType bool `json:"noContentType,omitempty"`
	} `json:"request"`
	// Capture stores response fields (JSON pointers) in variables for later fixtures.
	Capture map[string]string `json:"capture,omitempty"`
	Expect  struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers,omitempty"`
		// Body maps JSON pointers into the response to expected values (see matchValue).
		Body map[string]json.RawMessage `json:"body,omitempty"`
		// Contains and NotContains are substrings of the raw response body.
		Contains    []string `json:"contains,omitempty"`
		NotContains []string `json:"notContains,omitempty"`
		// Events lists every event the request caused, in stream order; the last is always its
		// scimlog.request record.
		Events []struct {
			Type string                     `json:"type"`
			Data map[string]json.RawMessage `json:"data,omitempty"`
		} `json:"events"`
	} `json:"expect"`
}

func TestConformance(t *testing.T) {
	t.Parallel()
	suites, err := filepath.Glob(filepath.Join("testdata", "conformance", "*"))
	if err != nil || len(suites) == 0 {
		t.Fatalf("no conformance suites: %v", err)
	}
	for _, dir := range suites {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
			if len(files) == 0 {
				t.Fatalf("suite %s has no fixtures", dir)
			}
			h := newHarness(t, noRateLimit)
			vars := map[string]string{"base": "https://scim.example.test/populations/idp1/scim/v2"}
			for _, f := range files {
				fx := loadFixture(t, f)
				if !runFixture(t, h, filepath.Base(f), fx, vars) {
					return // later fixtures depend on this one
				}
			}
		})
	}
}

func loadFixture(t *testing.T, path string) fixture {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&fx); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if fx.Request.Method == "" || fx.Expect.Status == 0 || len(fx.Expect.Events) == 0 {
		t.Fatalf("%s: request.method, expect.status and expect.events are required", path)
	}
	return fx
}

var varRef = regexp.MustCompile(`\{\{([A-Za-z0-9_]+)\}\}`)

// expand replaces {{name}} by the variable's value; an unknown variable fails the test.
func expand(t *testing.T, name, s string, vars map[string]string) string {
	t.Helper()
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		v, ok := vars[m[2:len(m)-2]]
		if !ok {
			t.Fatalf("%s: variable %s is not set by an earlier fixture", name, m)
		}
		return v
	})
}

// wireURL escapes what may not appear on an HTTP request line (spaces, quotes) and leaves the rest of
// the query as the IdP wrote it, so "+", "%22" and raw forms all reach the server unchanged.
func wireURL(p string) string {
	return strings.NewReplacer(" ", "%20", `"`, "%22").Replace(p)
}

// runFixture sends one request and checks it; it reports whether the suite may go on.
func runFixture(t *testing.T, h *harness, name string, fx fixture, vars map[string]string) bool {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Errorf("%s (%s): %s", name, fx.Source, fmt.Sprintf(format, args...))
	}
	var body io.Reader
	switch {
	case fx.Request.RawBody != nil:
		body = strings.NewReader(expand(t, name, *fx.Request.RawBody, vars))
	case len(fx.Request.Body) > 0:
		body = strings.NewReader(expand(t, name, string(fx.Request.Body), vars))
	}
	url := h.url + "/populations/idp1/scim/v2" + wireURL(expand(t, name, fx.Request.Path, vars))
	req, err := http.NewRequest(fx.Request.Method, url, body)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	req.Header.Set("Authorization", "Bearer "+h.secrets["idp1"])
	if body != nil && !fx.Request.NoContentType {
		req.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
	}
	for k, v := range fx.Request.Headers {
		req.Header.Set(k, expand(t, name, v, vars))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	r := resp{status: res.StatusCode, header: res.Header, raw: raw, reqID: res.Header.Get("X-Request-Id")}
	var doc any
	if len(raw) > 0 {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&doc); err != nil {
			fail("response is not JSON: %q", raw)
			return false
		}
	}
	ok := true
	if r.status != fx.Expect.Status {
		fail("status = %d, want %d; body %s", r.status, fx.Expect.Status, raw)
		ok = false
	}
	if len(raw) > 0 && !strings.HasPrefix(res.Header.Get("Content-Type"), "application/scim+json") {
		fail("Content-Type = %q, want application/scim+json", res.Header.Get("Content-Type"))
	}
	if p := nullAt(doc, ""); p != "" {
		// Entra: no nulls in responses (its validator and Test connection fail on them).
		fail("null at %s in %s", p, raw)
	}
	if r.status >= 400 {
		// Every error is an RFC 7644 §3.12 body with status as a string.
		m, _ := doc.(map[string]any)
		if s, _ := m["schemas"].([]any); len(s) != 1 || s[0] != scimschema.Error || m["status"] != strconv.Itoa(r.status) {
			fail("error body = %s, want the SCIM error form", raw)
		}
	}
	for v, ptr := range fx.Capture {
		got, found := pointer(doc, ptr)
		if s, isStr := got.(string); found && isStr {
			vars[v] = s
		} else {
			fail("capture %s: %s is not a string in %s", v, ptr, raw)
			ok = false
		}
	}
	for k, v := range fx.Expect.Headers {
		checkValue(t, fail, "header "+k, headerValue(res.Header, k), json.RawMessage(strconv.Quote(expand(t, name, v, vars))), vars)
	}
	for ptr, want := range fx.Expect.Body {
		got, found := pointer(doc, expand(t, name, ptr, vars))
		if !found {
			got = absent{}
		}
		checkValue(t, fail, "body "+ptr, got, want, vars)
	}
	for _, s := range fx.Expect.Contains {
		if s = expand(t, name, s, vars); !bytes.Contains(raw, []byte(s)) {
			fail("body does not contain %q: %s", s, raw)
		}
	}
	for _, s := range fx.Expect.NotContains {
		if s = expand(t, name, s, vars); bytes.Contains(raw, []byte(s)) {
			fail("body contains %q: %s", s, raw)
		}
	}

	evs := h.eventsOf(r)
	types := eventTypes(evs)
	var want []string
	for _, e := range fx.Expect.Events {
		want = append(want, e.Type)
	}
	if !slices.Equal(types, want) {
		fail("events = %v, want %v", types, want)
		return ok
	}
	for i, e := range fx.Expect.Events {
		b, err := json.Marshal(evs[i].Data)
		if err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var data any
		d.Decode(&data)
		for ptr, wantV := range e.Data {
			got, found := pointer(data, expand(t, name, ptr, vars))
			if !found {
				got = absent{}
			}
			checkValue(t, fail, fmt.Sprintf("event %d (%s) %s", i, e.Type, ptr), got, wantV, vars)
		}
	}
	// The provisioning-log record always says what the client was told.
	l := logOf(t, evs)
	wantStatus := events.LogSuccess
	if r.status >= 400 {
		wantStatus = events.LogError
	}
	if l.HTTPStatus != r.status || l.Status != wantStatus || l.Method != fx.Request.Method {
		fail("scimlog = %d %s %s, want %d %s %s", l.HTTPStatus, l.Status, l.Method, r.status, wantStatus, fx.Request.Method)
	}
	if bytes.Contains(l.RequestBody, []byte("password")) && !bytes.Contains(l.RequestBody, []byte(redacted)) {
		fail("password not redacted in the scimlog record: %s", l.RequestBody)
	}
	return ok
}

// nullAt returns the JSON pointer of a null in doc, or "" if there is none.
func nullAt(doc any, at string) string {
	switch x := doc.(type) {
	case map[string]any:
		for k, v := range x {
			if v == nil {
				return at + "/" + k
			}
			if p := nullAt(v, at+"/"+k); p != "" {
				return p
			}
		}
	case []any:
		for i, v := range x {
			if v == nil {
				return at + "/" + strconv.Itoa(i)
			}
			if p := nullAt(v, at+"/"+strconv.Itoa(i)); p != "" {
				return p
			}
		}
	}
	return ""
}

func headerValue(h http.Header, k string) any {
	if v := h.Values(k); len(v) > 0 {
		return v[0]
	}
	return absent{}
}

// absent stands for a JSON pointer that names nothing.
type absent struct{}

// pointer resolves an RFC 6901 JSON pointer in a decoded document.
func pointer(doc any, ptr string) (any, bool) {
	if ptr == "" {
		return doc, true
	}
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			cur = x[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// checkValue compares got with a fixture's expected value. Strings with a meaning:
//
//	"<absent>"    the pointer names nothing (responses never hold a null: runFixture checks)
//	"<present>"   it names something other than null
//	"<nonempty>"  a non-empty string, list or object, or any number or boolean
//	"<len=N>"     a list or object of N elements
//	"<integer>"   a JSON integer (Okta needs integer counters)
//	"{{name}}"    a captured variable (also inside strings and lists)
//
// Anything else must be equal as JSON.
func checkValue(t *testing.T, fail func(string, ...any), what string, got any, want json.RawMessage, vars map[string]string) {
	t.Helper()
	var w string
	if json.Unmarshal(want, &w) == nil {
		_, isAbsent := got.(absent)
		switch {
		case w == "<absent>":
			if !isAbsent && got != nil {
				fail("%s = %v, want it absent", what, got)
			}
			return
		case w == "<present>":
			if isAbsent || got == nil {
				fail("%s is absent", what)
			}
			return
		case w == "<nonempty>":
			empty := isAbsent || got == nil || got == ""
			if l, ok := got.([]any); ok && len(l) == 0 {
				empty = true
			}
			if m, ok := got.(map[string]any); ok && len(m) == 0 {
				empty = true
			}
			if empty {
				fail("%s = %v, want it non-empty", what, got)
			}
			return
		case w == "<integer>":
			n, ok := got.(json.Number)
			if _, err := strconv.ParseInt(string(n), 10, 64); !ok || err != nil {
				fail("%s = %v (%T), want an integer", what, got, got)
			}
			return
		case strings.HasPrefix(w, "<len=") && strings.HasSuffix(w, ">"):
			n, _ := strconv.Atoi(w[5 : len(w)-1])
			l := -1
			switch x := got.(type) {
			case []any:
				l = len(x)
			case map[string]any:
				l = len(x)
			}
			if l != n {
				fail("%s = %v, want %d elements", what, got, n)
			}
			return
		}
	}
	if _, isAbsent := got.(absent); isAbsent {
		fail("%s is absent, want %s", what, want)
		return
	}
	exp := varRef.ReplaceAllStringFunc(string(want), func(m string) string {
		if v, ok := vars[m[2:len(m)-2]]; ok {
			b, _ := json.Marshal(v)
			return string(b[1 : len(b)-1])
		}
		return m
	})
	var wv any
	d := json.NewDecoder(strings.NewReader(exp))
	d.UseNumber()
	if err := d.Decode(&wv); err != nil {
		t.Fatalf("%s: bad expected value %s: %v", what, want, err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(wv)
	if !bytes.Equal(gb, wb) {
		fail("%s = %s, want %s", what, gb, wb)
	}
}
