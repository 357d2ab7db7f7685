package scimingest

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// hopLags reads scimflow_scim_ingest_admission_hop_lag_seconds: the auth replicas' series by
// replica id.
func (h *harness) authHopLags() map[string]float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "scimflow_scim_ingest_admission_hop_lag_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["hop"] == hopAuthReplica {
				out[labels["replica_id"]] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// fakeReplica stands in for an auth replica: a lease in auth_replicas (as services/auth/replica.go
// writes it) and/or its durable IDENTITY consumer, which nobody pulls from until the test acks.
type fakeReplica struct {
	id   string
	cons jetstream.Consumer
}

func (h *harness) authLeases() jetstream.KeyValue {
	h.t.Helper()
	kv, err := h.js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: authReplicasBucket, History: 1, TTL: authReplicaLeaseTTL})
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

func (h *harness) fakeReplica(id string, lease bool) *fakeReplica {
	h.t.Helper()
	ctx := context.Background()
	if lease {
		if _, err := h.authLeases().Put(ctx, id, []byte(`{"token":"test"}`)); err != nil {
			h.t.Fatal(err)
		}
	}
	c, err := h.js.CreateOrUpdateConsumer(ctx, events.StreamIdentity, jetstream.ConsumerConfig{Durable: authIdentityDurable + id, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		h.t.Fatal(err)
	}
	return &fakeReplica{id: id, cons: c}
}

// catchUp applies (acks) everything pending, as a replica that caught up does.
func (r *fakeReplica) catchUp(t testing.TB) {
	t.Helper()
	for {
		info, err := r.cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		batch, err := r.cons.Fetch(100, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// publishIdentity puts one IDENTITY event on the stream, as identity-store's relay does.
func (h *harness) publishIdentity(email string) {
	h.t.Helper()
	e := events.New("idp1", time.Now(), "corr", "", events.IdentityChanged{Identity: events.Identity{UserID: events.UserID("idp1", email), Email: email, Status: events.StatusActive}})
	data, err := events.Marshal(e)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.js.Publish(context.Background(), e.Subject, data, jetstream.WithMsgID(e.ID)); err != nil {
		h.t.Fatal(err)
	}
}

// TestAdmissionCountsLiveAuthReplicas: an auth replica with a live lease whose IDENTITY consumer is
// held back turns admission control on — a create gets 429 with Retry-After, a deactivation 200 —
// and the metric and the published state name the replica; once it caught up admission is off
// again. A replica whose lease is gone (a clean stop deletes it) and a durable without any lease do
// not hold admission on, although both still have IDENTITY messages pending.
func TestAdmissionCountsLiveAuthReplicas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit, func(c *Config) { c.AdmissionMaxLag = config.Duration(200 * time.Millisecond) })
	victim := h.createUser("victim@x.test")
	h.waitDrained()
	create := func(name string) resp {
		return h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": name})
	}

	r1 := h.fakeReplica("r1", true)
	orphan := h.fakeReplica("r2", false) // a durable whose replica holds no lease
	h.publishIdentity("a@x.test")
	eventually(t, "admission control active for auth replica r1", func() bool {
		return h.gauge("scimflow_scim_ingest_admission_active") == 1 && h.authHopLags()["r1"] > 0.2
	})
	if lags := h.authHopLags(); len(lags) != 1 {
		t.Errorf("auth replica hop lags = %v, want only r1 (r2 holds no lease)", lags)
	}
	if r := create("refused@x.test"); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Errorf("create while auth replica r1 lags = %d (Retry-After %q) %s, want 429 with Retry-After", r.status, r.header.Get("Retry-After"), r.raw)
	}
	if r := h.do("PATCH", "/Users/"+victim, patchBody(map[string]any{"op": "replace", "path": "active", "value": false})); r.status != http.StatusOK {
		t.Errorf("deactivation while auth replica r1 lags = %d %s, want 200", r.status, r.raw)
	}
	eventually(t, "published state names auth replica r1", func() bool {
		st, ok := h.onlyAdmission()
		return ok && st.Active && st.Hop == "auth_replica:r1" && st.AuthReplica == "r1" && st.AuthLagMS > 200 && st.LagMS >= st.AuthLagMS
	})

	r1.catchUp(t)
	eventually(t, "admission control inactive once r1 caught up", func() bool {
		return h.gauge("scimflow_scim_ingest_admission_active") == 0 && h.authHopLags()["r1"] == 0
	})
	if r := create("after@x.test"); r.status != http.StatusCreated {
		t.Errorf("create after r1 caught up = %d %s, want 201", r.status, r.raw)
	}
	h.waitDrained()

	// r1 falls behind again and then stops cleanly (its lease deleted): its durable, still
	// behind, no longer counts.
	h.publishIdentity("b@x.test")
	eventually(t, "admission control active for r1 again", func() bool {
		return h.gauge("scimflow_scim_ingest_admission_active") == 1 && h.authHopLags()["r1"] > 0.2
	})
	if err := h.authLeases().Delete(context.Background(), "r1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "admission control inactive once r1's lease is gone", func() bool {
		_, counted := h.authHopLags()["r1"]
		return !counted && h.gauge("scimflow_scim_ingest_admission_active") == 0
	})
	for _, c := range []jetstream.Consumer{r1.cons, orphan.cons} {
		if info, err := c.Info(context.Background()); err != nil || info.NumPending+uint64(info.NumAckPending) == 0 {
			t.Errorf("consumer %v: info %+v, err %v; want messages still pending (the test holds it back)", c.CachedInfo().Name, info, err)
		}
	}
	if lags := h.authHopLags(); len(lags) != 0 {
		t.Errorf("auth replica hop lags without live leases = %v, want none", lags)
	}
	if r := create("leaseless@x.test"); r.status != http.StatusCreated {
		t.Errorf("create with only lease-less replicas behind = %d %s, want 201", r.status, r.raw)
	}
}

// leaseEntry is a watched auth_replicas entry.
type leaseEntry struct {
	jetstream.KeyValueEntry // only the methods below are called
	key                     string
	created                 time.Time
	op                      jetstream.KeyValueOp
}

func (e leaseEntry) Key() string                     { return e.key }
func (e leaseEntry) Created() time.Time              { return e.created }
func (e leaseEntry) Operation() jetstream.KeyValueOp { return e.op }

// TestAuthLeaseLiveness: a lease counts while its latest entry is a put written less than the lease
// TTL ago; an expired one (its replica died without deleting it) does not, nor does one whose latest
// entry is a delete (a clean stop) or a purge, and a put after that counts again.
func TestAuthLeaseLiveness(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var l leases
	for _, e := range []leaseEntry{
		{key: "fresh", created: now.Add(-time.Second)},
		{key: "edge", created: now.Add(-authReplicaLeaseTTL + time.Millisecond)},
		{key: "expired", created: now.Add(-authReplicaLeaseTTL)},
		{key: "old", created: now.Add(-time.Hour)},
		{key: "stopped", created: now.Add(-2 * time.Second)},
		{key: "stopped", created: now.Add(-time.Second), op: jetstream.KeyValueDelete},
		{key: "purged", created: now.Add(-2 * time.Second)},
		{key: "purged", created: now.Add(-time.Second), op: jetstream.KeyValuePurge},
		{key: "back", created: now.Add(-3 * time.Second)},
		{key: "back", created: now.Add(-2 * time.Second), op: jetstream.KeyValueDelete},
		{key: "back", created: now.Add(-time.Second)},
	} {
		l.note(e)
	}
	got := l.live(now)
	want := []string{"back", "edge", "fresh"}
	if !slices.Equal(got, want) {
		t.Errorf("live(%v) = %v, want %v", now, got, want)
	}
}
