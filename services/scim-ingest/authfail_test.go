package scimingest

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestAuthFailuresCountedNotStreamed: requests that fail authentication are
// counted per IdP in a metric and put nothing on a stream.
func TestAuthFailuresCountedNotStreamed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for range 40 {
		if r := h.doAs("idp1", "wrong", "GET", "/Users", nil, nil); r.status != http.StatusUnauthorized {
			t.Fatalf("bad secret: %d, want 401", r.status)
		}
	}
	for range 3 {
		h.doAs("nosuch", "wrong", "POST", "/Users", map[string]any{"userName": "x@x.test"}, nil)
	}
	last := h.doAs("idp1", "s3cret-idp1", "GET", "/Users", nil, nil)
	h.eventsOf(last)
	if n := len(h.allEvents()); n != 1 {
		t.Errorf("stream events after 43 refused requests and one good one = %d, want 1 (the good one's log record)", n)
	}
	res, err := http.Get(h.metricsURL + "/metrics") // the metrics listener (docs/security.md, finding 11)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`scimflow_scim_ingest_auth_failures_total{idp="idp1"} 40`,
		`scimflow_scim_ingest_auth_failures_total{idp="unknown"} 3`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestAuthFailuresLoggedOncePerIdP: a flush logs one entry per IdP with the count, nothing when
// there were no failures.
func TestAuthFailuresLoggedOncePerIdP(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	a := newAuthFailures(slog.New(slog.NewJSONHandler(&buf, nil)))
	for range 1000 {
		a.add("okta")
	}
	a.add("")
	a.flush()
	a.flush() // nothing new: no entry
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0]["idp_id"] != "okta" || lines[0]["requests"] != 1000.0 || lines[1]["idp_id"] != "unknown" || lines[1]["requests"] != 1.0 {
		t.Errorf("log entries = %v, want one for okta (1000) and one for unknown (1)", lines)
	}
}
