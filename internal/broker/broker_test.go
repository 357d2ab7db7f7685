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
		if err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
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
	// A configured max age is applied to the existing streams.
	if err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{MaxAge: 720 * time.Hour}); err != nil {
		t.Fatalf("EnsureStreams(max age) = %v", err)
	}
	s, _ := js.Stream(ctx, events.StreamAuth)
	info, _ := s.Info(ctx)
	if info.Config.MaxAge != 720*time.Hour {
		t.Errorf("max age after update = %v, want 720h", info.Config.MaxAge)
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
