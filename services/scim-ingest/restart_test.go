package scimingest

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// restartNATS stops the embedded server and returns a function that starts a new one on the same
// store directory and port.
func (h *harness) stopNATS() func() {
	h.t.Helper()
	u, err := url.Parse(h.natsURL)
	if err != nil {
		h.t.Fatal(err)
	}
	h.emb.Shutdown()
	return func() { h.startNATS(u.Host) }
}

// TestWritesWhileNATSIsDown: writes made while NATS is stopped succeed (they are on disk in the
// outbox) until admission control refuses bulk writes (429 with Retry-After: the outbox reached
// outbox_max_depth or its oldest record is older than admission_max_lag) while a deactivation is
// still admitted; once NATS is back admission recovers and every committed event is published
// exactly once — also when the service restarted in between. (Before admission control the bound
// answered 503 to every write, deactivations included.)
func TestWritesWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit, func(c *Config) { c.OutboxMaxDepth = 40 })
	before := h.createUser("before@x.test")
	victim := h.createUser("victim@x.test")
	gr := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "g"})
	gid := str(gr.body["id"])
	h.eventsOf(gr)

	// Phase 1: NATS down, the service keeps running.
	start := h.stopNATS()
	var written []resp
	saw429 := false
	for i := 0; i < 100 && !saw429; i++ {
		r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": fmt.Sprintf("down%d@x.test", i)})
		switch r.status {
		case http.StatusCreated:
			written = append(written, r)
		case http.StatusTooManyRequests:
			saw429 = true
			if r.header.Get("Retry-After") == "" || r.body["status"] != "429" {
				t.Errorf("429 without Retry-After or SCIM error: %v %s", r.header, r.raw)
			}
		default:
			t.Fatalf("POST while NATS is down = %d %s", r.status, r.raw)
		}
	}
	if !saw429 {
		t.Fatalf("no 429 after 100 writes with outbox_max_depth 40")
	}
	// A security fact is admitted while bulk writes are refused.
	deact := h.do("PATCH", "/Users/"+victim, patchBody(map[string]any{"op": "replace", "path": "displayName", "value": "V"},
		map[string]any{"op": "replace", "value": map[string]any{"active": false}}))
	if deact.status != http.StatusOK {
		t.Fatalf("deactivating PATCH while admission control refuses bulk writes = %d %s, want 200", deact.status, deact.raw)
	}
	if r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "refused@x.test"}); r.status != http.StatusTooManyRequests {
		t.Errorf("create while lagging = %d, want 429", r.status)
	}
	// Writes stay refused while the backlog is over the bound; reads are served.
	if r := h.do("GET", "/Users/"+before, nil); r.status != 200 {
		t.Errorf("GET while NATS is down = %d", r.status)
	}
	start()
	for _, r := range append(written, deact) {
		h.eventsOf(r)
	}
	h.waitDrained() // published is not yet deleted from the outbox: wait until the bound is clear
	if r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "after@x.test"}); r.status != http.StatusCreated {
		t.Errorf("create after the pipeline caught up = %d %s, want 201 (admission recovered)", r.status, r.raw)
	}

	// Phase 2: NATS down, a membership change, then the service restarts before NATS returns.
	start = h.stopNATS()
	var uids []string
	for _, r := range written[:3] {
		uids = append(uids, str(r.body["id"]))
	}
	members := []any{}
	for _, id := range uids {
		members = append(members, map[string]any{"value": id})
	}
	patch := h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "add", "path": "members", "value": members}))
	if patch.status != http.StatusNoContent {
		t.Fatalf("PATCH while NATS is down = %d %s", patch.status, patch.raw)
	}
	del := h.do("DELETE", "/Users/"+before, nil)
	if del.status != http.StatusNoContent {
		t.Fatalf("DELETE while NATS is down = %d %s", del.status, del.raw)
	}
	h.stopService()
	start()
	h.startService()
	for _, r := range []resp{patch, del} {
		h.eventsOf(r)
	}

	// Every event exactly once; every write's resource event present.
	seen := map[string]int{}
	byReq := map[string][]string{}
	for _, e := range h.allEvents() {
		seen[e.ID]++
		byReq[e.CorrelationID] = append(byReq[e.CorrelationID], e.Type)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s published %d times", id, n)
		}
	}
	for _, r := range written {
		if got := byReq[r.reqID]; len(got) != 2 || got[0] != events.TypeSCIMUserUpserted || got[1] != events.TypeSCIMLog {
			t.Errorf("request %s events = %v, want upserted + scimlog", r.reqID, got)
		}
	}
	if got := byReq[patch.reqID]; len(got) != 2 || got[0] != events.TypeSCIMGroupMembers {
		t.Errorf("PATCH events = %v", got)
	}
	if got := byReq[del.reqID]; len(got) != 2 || got[0] != events.TypeSCIMUserDeleted {
		t.Errorf("DELETE events = %v", got)
	}
}
