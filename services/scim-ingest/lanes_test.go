package scimingest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// streamOf reads every event of a stream, and how many messages carried them.
func (h *harness) streamOf(stream string) ([]events.Event, int) {
	h.t.Helper()
	ctx := context.Background()
	st, err := h.js.Stream(ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.Event
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			h.t.Fatal(err)
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, evs...)
	}
	return out, int(info.State.Msgs)
}

// TestCommitNumbersAndPriorityLane: every write's events (its provisioning-log record included)
// share one commit number, strictly increasing from write to write, and travel in one message; a
// deactivation and a deletion are also copied to SCIM_PRIORITY, a create or a rename is not.
func TestCommitNumbersAndPriorityLane(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "ada@x.test", "active": true})
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.raw)
	}
	id := str(r.body["id"])
	patch := func(ops ...map[string]any) {
		t.Helper()
		if r := h.do("PATCH", "/Users/"+id, map[string]any{"schemas": []string{scimschema.PatchOp}, "Operations": ops}); r.status != http.StatusOK {
			t.Fatalf("PATCH = %d %s", r.status, r.raw)
		}
	}
	patch(map[string]any{"op": "replace", "path": "displayName", "value": "Ada L"})
	// A mixed PATCH counts as a security fact when any op takes access away.
	patch(map[string]any{"op": "replace", "path": "displayName", "value": "Ada"}, map[string]any{"op": "replace", "path": "active", "value": false})
	if r := h.do("DELETE", "/Users/"+id, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", r.status, r.raw)
	}
	h.waitDrained()

	all, msgs := h.streamOf(events.StreamSCIM)
	if msgs != 4 {
		t.Errorf("SCIM messages = %d for 4 writes, want 4 (each write's events and log record in one)", msgs)
	}
	var last uint64
	byCommit := map[uint64][]string{}
	for _, e := range all {
		if e.Commit == 0 || e.Commit < last {
			t.Errorf("event %s commit %d after %d: want > 0 and never decreasing", e.Type, e.Commit, last)
		}
		last = e.Commit
		byCommit[e.Commit] = append(byCommit[e.Commit], e.Type)
	}
	if len(byCommit) != 4 {
		t.Errorf("commit numbers = %v, want one per write", byCommit)
	}
	prio, _ := h.streamOf(events.StreamSCIMPriority)
	var got []string
	for _, e := range prio {
		got = append(got, e.Type)
		found := false
		for _, o := range all {
			if o.ID == e.ID && o.Commit == e.Commit {
				found = true
			}
		}
		if !found {
			t.Errorf("priority event %s has no identical copy in SCIM", e.ID)
		}
	}
	want := []string{events.TypeSCIMUserUpserted, events.TypeSCIMUserDeleted}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("SCIM_PRIORITY = %v, want %v", got, want)
	}
	if up, ok := prio[0].Data.(events.SCIMUserUpserted); !ok || up.Active {
		t.Errorf("priority upsert = %+v, want the deactivation", prio[0].Data)
	}
}

// TestSecurityWriteClassification: which writes admission control always admits.
func TestSecurityWriteClassification(t *testing.T) {
	t.Parallel()
	patch := func(ops string) []byte {
		return []byte(`{"schemas":["` + scimschema.PatchOp + `"],"Operations":[` + ops + `]}`)
	}
	for _, c := range []struct {
		name         string
		method, kind string
		hasID        bool
		body         []byte
		reauth, want bool
	}{
		{"create user", "POST", kindUser, false, []byte(`{"userName":"a","active":false}`), false, false},
		{"delete user", "DELETE", kindUser, true, nil, false, true},
		{"put inactive", "PUT", kindUser, true, []byte(`{"userName":"a","active":false}`), false, true},
		{"put active", "PUT", kindUser, true, []byte(`{"userName":"a","active":true}`), false, false},
		{"patch path active", "PATCH", kindUser, true, patch(`{"op":"Replace","path":"active","value":false}`), false, true},
		{"patch string False", "PATCH", kindUser, true, patch(`{"op":"replace","path":"active","value":"False"}`), false, true},
		{"patch no path", "PATCH", kindUser, true, patch(`{"op":"replace","value":{"Active":false}}`), false, true},
		{"mixed patch", "PATCH", kindUser, true, patch(`{"op":"replace","path":"displayName","value":"x"},{"op":"replace","path":"active","value":false}`), false, true},
		{"rename", "PATCH", kindUser, true, patch(`{"op":"replace","path":"displayName","value":"x"}`), false, false},
		{"member remove reauth", "PATCH", kindGroup, true, patch(`{"op":"remove","path":"members[value eq \"u\"]"}`), true, true},
		{"member remove automatic", "PATCH", kindGroup, true, patch(`{"op":"remove","path":"members[value eq \"u\"]"}`), false, false},
		{"member add reauth", "PATCH", kindGroup, true, patch(`{"op":"add","path":"members","value":[{"value":"u"}]}`), true, false},
		{"group put reauth", "PUT", kindGroup, true, []byte(`{"displayName":"g"}`), true, true},
		{"group delete reauth", "DELETE", kindGroup, true, nil, true, true},
	} {
		if got := securityWrite(c.method, c.kind, c.hasID, c.body, c.reauth); got != c.want {
			t.Errorf("securityWrite(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

// gauge reads one of the service's unlabelled gauges.
func (h *harness) gauge(name string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	h.t.Fatalf("no metric %s", name)
	return 0
}

// TestAdmissionByLag: while the outbox's oldest record is older than admission_max_lag (NATS is
// stopped), creates get 429 with Retry-After and the gauge says admission control is active, but a
// deactivation and a deletion are admitted; once NATS is back and the backlog published, creates are
// accepted again.
func TestAdmissionByLag(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit, func(c *Config) { c.AdmissionMaxLag = config.Duration(200 * time.Millisecond) })
	victim := h.createUser("victim@x.test")
	gone := h.createUser("gone@x.test")
	h.waitDrained()
	if g := h.gauge("scimflow_scim_ingest_admission_active"); g != 0 {
		t.Fatalf("admission active = %v on an idle pipeline, want 0", g)
	}
	start := h.stopNATS()
	if r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "first@x.test"}); r.status != http.StatusCreated {
		t.Fatalf("first create with NATS down = %d, want 201 (no lag yet)", r.status)
	}
	eventually(t, "admission control active", func() bool { return h.gauge("scimflow_scim_ingest_admission_active") == 1 })
	r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "refused@x.test"})
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["status"] != "429" {
		t.Errorf("create while lagging = %d (Retry-After %q) %s, want 429 with Retry-After in SCIM error form", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if r := h.do("PATCH", "/Users/"+victim, patchBody(map[string]any{"op": "replace", "path": "active", "value": false})); r.status != http.StatusOK {
		t.Errorf("deactivation while lagging = %d %s, want 200", r.status, r.raw)
	}
	if r := h.do("DELETE", "/Users/"+gone, nil); r.status != http.StatusNoContent {
		t.Errorf("deletion while lagging = %d %s, want 204", r.status, r.raw)
	}
	if r := h.do("GET", "/Users/"+victim, nil); r.status != http.StatusOK {
		t.Errorf("read while lagging = %d, want 200", r.status)
	}
	start()
	h.waitDrained()
	eventually(t, "admission control inactive", func() bool { return h.gauge("scimflow_scim_ingest_admission_active") == 0 })
	if r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "after@x.test"}); r.status != http.StatusCreated {
		t.Errorf("create after recovery = %d %s, want 201", r.status, r.raw)
	}
}
