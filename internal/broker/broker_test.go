package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/testkit/natstest"
)

func TestStreamsAndKVExistWithSettings(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Idempotent: a second and third call (as each service makes at start) succeed and change nothing.
	for i := 0; i < 2; i++ {
		if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
			t.Fatalf("EnsureStreams #%d = %v", i+2, err)
		}
	}
	for _, name := range []string{events.StreamSCIM, events.StreamIdentity, events.StreamAuth, events.StreamSCIMPriority, events.StreamIdentityPriority} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("Stream(%s) = %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := info.Config
		if c.Storage != jetstream.FileStorage || !c.DenyDelete || !c.DenyPurge || c.Duplicates != 2*time.Minute ||
			c.Retention != jetstream.LimitsPolicy || c.MaxAge != 0 || c.Replicas != 1 || c.Discard != jetstream.DiscardNew {
			t.Errorf("stream %s config = storage %v deny_delete %v deny_purge %v dup %v retention %v max_age %v replicas %d discard %v",
				name, c.Storage, c.DenyDelete, c.DenyPurge, c.Duplicates, c.Retention, c.MaxAge, c.Replicas, c.Discard)
		}
		if len(c.Subjects) != len(events.StreamSubjects[name]) {
			t.Errorf("stream %s subjects = %v, want %v", name, c.Subjects, events.StreamSubjects[name])
		}
	}
	kv, err := js.KeyValue(ctx, broker.KVIdPConfig)
	if err != nil {
		t.Fatalf("KeyValue(%s) = %v", broker.KVIdPConfig, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bucket() != broker.KVIdPConfig {
		t.Errorf("kv bucket = %s", st.Bucket())
	}
}

// TestServicesNeverChangeExistingStreams: a service started with another nats.max_age (or none)
// leaves the live streams as they are and reports the difference; only ApplyStreams changes them, and
// it refuses to shorten retention without force.
func TestServicesNeverChangeExistingStreams(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	maxAge := func() time.Duration {
		t.Helper()
		s, err := js.Stream(ctx, events.StreamIdentity)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config.MaxAge
	}
	// natstest created the streams without a max age. A service configured with 720h changes nothing.
	drift, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{MaxAge: 720 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := maxAge(); got != 0 {
		t.Fatalf("max age after a service start with 720h = %v, want unchanged 0", got)
	}
	if len(drift) == 0 || drift[0].Field != "max_age" || !drift[0].Shortens {
		t.Errorf("drift = %v, want max_age reported as shortening", drift)
	}
	// The operator command refuses to shorten without force, and changes nothing.
	if _, err := broker.ApplyStreams(ctx, js, broker.StreamsConfig{MaxAge: 720 * time.Hour}, false, false); err == nil {
		t.Fatal("ApplyStreams(720h, no force) = nil, want a refusal to shorten retention")
	}
	if got := maxAge(); got != 0 {
		t.Fatalf("max age after a refused apply = %v, want 0", got)
	}
	// A dry run reports and changes nothing; force applies.
	plan, err := broker.ApplyStreams(ctx, js, broker.StreamsConfig{MaxAge: 720 * time.Hour}, true, true)
	if err != nil || len(plan) == 0 {
		t.Fatalf("ApplyStreams(dry run) = %v, %v", plan, err)
	}
	if got := maxAge(); got != 0 {
		t.Fatalf("max age after a dry run = %v, want 0", got)
	}
	if _, err := broker.ApplyStreams(ctx, js, broker.StreamsConfig{MaxAge: 720 * time.Hour}, true, false); err != nil {
		t.Fatalf("ApplyStreams(force) = %v", err)
	}
	if got := maxAge(); got != 720*time.Hour {
		t.Fatalf("max age after a forced apply = %v, want 720h", got)
	}
	// A later service start without max_age (the case that used to reset every stream to unlimited)
	// leaves 720h in place; lengthening back to unlimited needs no force.
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	if got := maxAge(); got != 720*time.Hour {
		t.Fatalf("max age after a service start without max_age = %v, want 720h kept", got)
	}
	if _, err := broker.ApplyStreams(ctx, js, broker.StreamsConfig{}, false, false); err != nil {
		t.Fatalf("ApplyStreams(unlimited) = %v", err)
	}
	if got := maxAge(); got != 0 {
		t.Fatalf("max age after lengthening = %v, want unlimited", got)
	}
	// Nothing left to apply.
	if plan, err := broker.ApplyStreams(ctx, js, broker.StreamsConfig{}, false, true); err != nil || len(plan) != 0 {
		t.Errorf("ApplyStreams(dry run, in sync) = %v, %v; want nothing", plan, err)
	}
}

func TestDuplicateWindowDeduplicatesByEventID(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := events.New("idp1", time.Now(), "", "", events.SeatRemoved{UserID: "u1", Email: "a@x"})
	b, _ := events.Marshal(e)
	a1, err := js.Publish(ctx, e.Subject, b, jetstream.WithMsgID(e.ID))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := js.Publish(ctx, e.Subject, b, jetstream.WithMsgID(e.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !a2.Duplicate || a2.Sequence != a1.Sequence {
		t.Errorf("second publish = dup %v seq %d, want duplicate of seq %d", a2.Duplicate, a2.Sequence, a1.Sequence)
	}
}

// TestConfigGuard is the durability guard of docs/design.md §2.4: the embedded server syncs every write
// before acknowledging it and stores on disk.
func TestConfigGuard(t *testing.T) {
	t.Parallel()
	o := broker.EmbeddedOptions(broker.EmbeddedConfig{StoreDir: t.TempDir()})
	if !o.SyncAlways || !o.JetStream || o.StoreDir == "" {
		t.Errorf("EmbeddedOptions = sync_always %v jetstream %v store %q, want true true non-empty", o.SyncAlways, o.JetStream, o.StoreDir)
	}
	for _, sc := range broker.StreamConfigs(broker.StreamsConfig{Replicas: 3}) {
		if sc.Storage != jetstream.FileStorage || sc.Replicas != 3 || !sc.DenyDelete || !sc.DenyPurge {
			t.Errorf("stream %s = %+v", sc.Name, sc)
		}
	}
}
