package scimingest

import (
	"context"
	"net/http"
	"testing"

	"github.com/scimflow/scimflow/events"
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
	r := h.do("POST", "/Users", map[string]any{"schemas": []string{userURN}, "userName": "ada@x.test", "active": true})
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %d %s", r.status, r.raw)
	}
	id := str(r.body["id"])
	patch := func(ops ...map[string]any) {
		t.Helper()
		if r := h.do("PATCH", "/Users/"+id, map[string]any{"schemas": []string{patchURN}, "Operations": ops}); r.status != http.StatusOK {
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
	patch := func(ops string) []byte { return []byte(`{"schemas":["` + patchURN + `"],"Operations":[` + ops + `]}`) }
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
