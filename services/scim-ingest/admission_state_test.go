package scimingest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// admissionEntries reads the admission bucket: every instance's published state (an error: the
// read did not complete, e.g. a timeout on a loaded machine).
func (h *harness) admissionEntries() (map[string]events.AdmissionState, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]events.AdmissionState{}
	kv, err := h.js.KeyValue(ctx, broker.KVAdmission)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var st events.AdmissionState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			h.t.Fatalf("admission entry %s = %s: %v", k, e.Value(), err)
		}
		out[k] = st
	}
	return out, nil
}

// onlyAdmission returns the one instance's state, or ok false when there is not exactly one entry
// (or the bucket could not be read this time). It polls at most every 50 ms: each read creates a
// short-lived consumer.
func (h *harness) onlyAdmission() (events.AdmissionState, bool) {
	time.Sleep(50 * time.Millisecond)
	all, err := h.admissionEntries()
	if err != nil {
		return events.AdmissionState{}, false
	}
	for _, st := range all {
		return st, len(all) == 1
	}
	return events.AdmissionState{}, false
}

// TestAdmissionStatePublished: scim-ingest publishes its admission-control state in the admission
// bucket for identity-store's console — off on an idle pipeline; on, with the lag that caused it,
// while identity-store's SCIM consumer falls behind (here a stand-in durable of that name that nobody
// pulls from); off again once it caught up (the stand-in removed); and the entry is gone after a
// clean stop.
func TestAdmissionStatePublished(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit, func(c *Config) { c.AdmissionMaxLag = config.Duration(200 * time.Millisecond) })
	var off events.AdmissionState
	eventually(t, "admission state published as off", func() bool {
		st, ok := h.onlyAdmission()
		off = st
		return ok && !st.Active
	})
	if off.Instance == "" || off.PID == 0 || off.MaxLagMS != 200 || off.MaxDepth != h.cfg.OutboxMaxDepth || off.Since.IsZero() {
		t.Errorf("idle admission state = %+v, want instance, pid, max_lag_ms 200, max_depth %d and since", off, h.cfg.OutboxMaxDepth)
	}

	ctx := context.Background()
	// A crashed instance deletes nothing: the bucket's TTL is what removes its entry.
	if kv, err := h.js.KeyValue(ctx, broker.KVAdmission); err != nil {
		t.Fatal(err)
	} else if st, err := kv.Status(ctx); err != nil || st.TTL() != events.AdmissionTTL || st.History() != 1 {
		t.Errorf("admission bucket status = %v (err %v), want TTL %v and history 1", st, err, events.AdmissionTTL)
	}
	if _, err := h.js.CreateOrUpdateConsumer(ctx, events.StreamSCIM, jetstream.ConsumerConfig{Durable: identityStoreSCIMDurable, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	h.createUser("queued@x.test")
	var on events.AdmissionState
	eventually(t, "admission state published as on", func() bool {
		st, ok := h.onlyAdmission()
		on = st
		return ok && st.Active
	})
	if on.Instance != off.Instance || on.DownstreamLagMS <= 200 || on.LagMS < on.DownstreamLagMS || !on.Since.After(off.Since) {
		t.Errorf("lagging admission state = %+v, want instance %s, downstream_lag_ms > 200 = lag_ms, since after %v", on, off.Instance, off.Since)
	}
	r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": "refused@x.test"})
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("create while published on = %d, want 429", r.status)
	}
	eventually(t, "the refusal counted in the published state", func() bool {
		st, ok := h.onlyAdmission()
		return ok && st.Rejected >= 1
	})

	if err := h.js.DeleteConsumer(ctx, events.StreamSCIM, identityStoreSCIMDurable); err != nil {
		t.Fatal(err)
	}
	var back events.AdmissionState
	eventually(t, "admission state published as off again", func() bool {
		st, ok := h.onlyAdmission()
		back = st
		return ok && !st.Active
	})
	if !back.Since.After(on.Since) || back.DownstreamLagMS != 0 {
		t.Errorf("recovered admission state = %+v, want since after %v and no downstream lag", back, on.Since)
	}

	h.stopService()
	if all, err := h.admissionEntries(); err != nil || len(all) != 0 {
		t.Errorf("admission entries after a clean stop = %v (err %v), want none", all, err)
	}
}
