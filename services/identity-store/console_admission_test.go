package identitystore

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

// TestConsoleOverviewShowsAdmission: the overview shows each scim-ingest instance's admission-control
// state as the instances publish it in the admission bucket (services/scim-ingest/admission_state.go
// writes it; TestAdmissionStatePublished there drives it on and off): "not reported" before any
// instance wrote, "On" with the lag that caused it while one instance refuses bulk writes, "Off" once
// it recovered, and "not reported" again once the entries are gone.
func TestConsoleOverviewShowsAdmission(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	b := newBrowser(t, "http://"+h.addr)
	b.signIn(testToken)
	overview := func() string {
		t.Helper()
		res, page := b.do("GET", "/ui/", nil)
		if res.StatusCode != 200 {
			t.Fatalf("overview = %d:\n%s", res.StatusCode, page)
		}
		return page
	}
	if page := overview(); !strings.Contains(page, "Not reported: no scim-ingest has published") {
		t.Errorf("overview before any scim-ingest published lacks \"not reported\":\n%s", page)
	}

	ctx := context.Background()
	kv, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: broker.KVAdmission, History: 1, TTL: events.AdmissionTTL, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	put := func(st events.AdmissionState) {
		t.Helper()
		raw, _ := json.Marshal(st)
		if _, err := kv.Put(ctx, st.Instance, raw); err != nil {
			t.Fatal(err)
		}
	}
	put(events.AdmissionState{Instance: "ingest-a-0001", PID: 11, Active: true, Since: since, UpdatedAt: since.Add(time.Second),
		LagMS: 4321, Hop: "auth_replica:r-east", OutboxAgeMS: 12, DownstreamLagMS: 40, AuthLagMS: 4321, AuthReplica: "r-east", MaxLagMS: 1000, OutboxDepth: 7, MaxDepth: 100000, Rejected: 17, SecurityAdmitted: 3})
	put(events.AdmissionState{Instance: "ingest-b-0002", PID: 12, Since: since, UpdatedAt: since.Add(time.Second), MaxLagMS: 1000, MaxDepth: 100000})
	page := overview()
	for _, want := range []string{`<strong class="bad">On</strong>: bulk SCIM writes get 429`, "<code>ingest-a-0001</code>", "4321 ms / 1000 ms", "(auth_replica:r-east)", "4321 ms <code>r-east</code>",
		"<code>ingest-b-0002</code>", "7 / 100000", ">17<", "2026-12-06 10:00:00 UTC"} {
		if !strings.Contains(page, want) {
			t.Errorf("overview while ingest-a lags lacks %q:\n%s", want, page)
		}
	}
	if strings.Index(page, "ingest-a-0001") > strings.Index(page, "ingest-b-0002") {
		t.Errorf("instances not sorted by name")
	}

	put(events.AdmissionState{Instance: "ingest-a-0001", PID: 11, Since: since.Add(time.Minute), UpdatedAt: since.Add(time.Minute), MaxLagMS: 1000, MaxDepth: 100000, Rejected: 17})
	if page := overview(); !strings.Contains(page, `<span class="ok">Off</span>: every SCIM write is admitted`) || strings.Contains(page, `<strong class="bad">on</strong>`) {
		t.Errorf("overview after ingest-a recovered does not say off:\n%s", page)
	}

	for _, k := range []string{"ingest-a-0001", "ingest-b-0002"} {
		if err := kv.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if page := overview(); !strings.Contains(page, "Not reported: no scim-ingest has published") {
		t.Errorf("overview after the instances stopped lacks \"not reported\":\n%s", page)
	}
}
