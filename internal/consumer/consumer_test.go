package consumer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/consumer"
	"github.com/scimflow/scimflow/testkit/natstest"
)

// counting is a projection that counts applies per event id in bbolt, so a double apply is visible.
func counting(failFirst map[string]int) consumer.Handler {
	var mu sync.Mutex
	return func(_ context.Context, tx *bolt.Tx, m consumer.Msg) error {
		mu.Lock()
		if failFirst[m.Event.ID] > 0 {
			failFirst[m.Event.ID]--
			mu.Unlock()
			return errors.New("transient")
		}
		mu.Unlock()
		if m.Event.Data.(events.SeatRemoved).Reason == "poison" {
			return consumer.Permanent(errors.New("cannot apply"))
		}
		b, err := tx.CreateBucketIfNotExists([]byte("applied"))
		if err != nil {
			return err
		}
		var n uint64
		if v := b.Get([]byte(m.Event.ID)); v != nil {
			n = binary.BigEndian.Uint64(v)
		}
		return b.Put([]byte(m.Event.ID), binary.BigEndian.AppendUint64(nil, n+1))
	}
}

func publish(t *testing.T, js jetstream.JetStream, n int, reason string) []events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []events.Event
	for i := 0; i < n; i++ {
		e := events.New("idp1", time.Now(), "", "", events.SeatRemoved{UserID: fmt.Sprintf("u%d", i%7), Email: "a@x", Reason: reason})
		b, err := events.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, e.Subject, b, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatalf("publish: %v", err)
		}
		out = append(out, e)
	}
	return out
}

type fixture struct {
	db  *bolt.DB
	js  jetstream.JetStream
	reg *prometheus.Registry
}

func start(t *testing.T, f fixture, stream string, h consumer.Handler) (*consumer.Runner, context.CancelFunc, chan struct{}) {
	t.Helper()
	r, err := consumer.New(f.db, f.js, consumer.Config{Stream: stream, Durable: "test", MetricsPrefix: "t", BatchSize: 16, IdleCheck: 200 * time.Millisecond}, h, f.reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, cancel, done
}

func appliedCounts(t *testing.T, db *bolt.DB) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("applied")); b != nil {
			b.ForEach(func(k, v []byte) error { out[string(k)] = binary.BigEndian.Uint64(v); return nil })
		}
		return nil
	})
	return out
}

func checkExactlyOnce(t *testing.T, db *bolt.DB, evs []events.Event) {
	t.Helper()
	got := appliedCounts(t, db)
	for _, e := range evs {
		if got[e.ID] != 1 {
			t.Errorf("event %s applied %d times, want 1", e.ID, got[e.ID])
		}
	}
	if len(got) != len(evs) {
		t.Errorf("applied %d distinct events, want %d", len(got), len(evs))
	}
}

func openDB(t *testing.T) *bolt.DB {
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestRestartServerAndConsumerMidStream: the NATS server and then the consumer restart in the middle
// of a stream; every event is applied exactly once and the cursor ends at the stream's last sequence.
func TestRestartServerAndConsumerMidStream(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	evs := publish(t, js, 150, "x")
	r, cancel, done := start(t, f, events.StreamIdentity, counting(nil))
	waitCursorAtLeast(t, r, 40, 20*time.Second)
	srv.Restart() // server restart mid-stream
	evs = append(evs, publish(t, js, 100, "x")...)
	waitCursorAtLeast(t, r, 180, 30*time.Second)
	cancel() // consumer restart mid-stream
	<-done
	evs = append(evs, publish(t, js, 50, "x")...)
	f.reg = prometheus.NewRegistry()
	r2, _, _ := start(t, f, events.StreamIdentity, counting(nil))
	waitCursor(t, r2, 300, 30*time.Second)
	checkExactlyOnce(t, f.db, evs)
}

// TestTransientErrorNaksAndRetries: a handler error naks with backoff; the event is applied once later
// and the events after it are applied in order, none skipped.
func TestTransientErrorNaksAndRetries(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	evs := publish(t, js, 30, "x")
	r, _, _ := start(t, f, events.StreamIdentity, counting(map[string]int{evs[10].ID: 2, evs[25].ID: 1}))
	waitCursor(t, r, 30, 30*time.Second)
	checkExactlyOnce(t, f.db, evs)
	if got := testutil.ToFloat64(mustGet(t, f.reg, "t_consumer_naks_total")); got < 3 {
		t.Errorf("naks_total = %v, want at least the 3 failed deliveries", got)
	}
}

// TestPoisonIsTermedCountedAndSkipped: an undecodable message and an event the handler marks
// permanent are termed, recorded and counted; the consumer goes on.
func TestPoisonIsTermedCountedAndSkipped(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	ctx := context.Background()
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	good := publish(t, js, 3, "x")
	if _, err := js.Publish(ctx, "identity.idp1.user.u1.seat_removed", []byte(`{"type":"garbage"}`)); err != nil {
		t.Fatal(err)
	}
	publish(t, js, 1, "poison")
	good = append(good, publish(t, js, 3, "x")...)
	r, _, _ := start(t, f, events.StreamIdentity, counting(nil))
	waitCursor(t, r, 8, 20*time.Second)
	checkExactlyOnce(t, f.db, good)
	if got := testutil.ToFloat64(mustGet(t, f.reg, "t_consumer_poison_total")); got != 2 {
		t.Errorf("poison_total = %v, want 2", got)
	}
	var poisoned int
	f.db.View(func(tx *bolt.Tx) error { poisoned = tx.Bucket([]byte(consumer.PoisonBucket)).Stats().KeyN; return nil })
	if poisoned != 2 {
		t.Errorf("poison records = %d, want 2", poisoned)
	}
}

// TestTruncatedStreamHalts: events the consumer never applied were dropped by the stream's limits;
// the consumer halts instead of skipping them.
func TestTruncatedStreamHalts(t *testing.T) {
	t.Parallel()
	srv := natstest.StartBare(t)
	_, js := srv.Connect("test")
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TRUNC", Subjects: []string{"identity.>"}, MaxMsgs: 5, Discard: jetstream.DiscardOld}); err != nil {
		t.Fatal(err)
	}
	publish(t, js, 12, "x")
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	r, _, _ := start(t, f, "TRUNC", counting(nil))
	natstest.WaitFor(t, 10*time.Second, func() error {
		if err := r.Halted(); err == nil {
			return errors.New("not halted")
		}
		return nil
	})
	if r.Cursor() != 0 || len(appliedCounts(t, f.db)) != 0 {
		t.Errorf("after halt cursor = %d, applied %d; want nothing applied", r.Cursor(), len(appliedCounts(t, f.db)))
	}
	if got := testutil.ToFloat64(mustGet(t, f.reg, "t_consumer_halted")); got != 1 {
		t.Errorf("halted gauge = %v, want 1", got)
	}
}

// TestGapHalts: a message missing in the middle of the stream (deleted) halts the consumer at the
// event before it.
func TestGapHalts(t *testing.T) {
	t.Parallel()
	srv := natstest.StartBare(t)
	_, js := srv.Connect("test")
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GAP", Subjects: []string{"identity.>"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := publish(t, js, 6, "x")
	if err := st.DeleteMsg(ctx, 4); err != nil {
		t.Fatal(err)
	}
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	r, _, _ := start(t, f, "GAP", counting(nil))
	natstest.WaitFor(t, 10*time.Second, func() error {
		if err := r.Halted(); err == nil {
			return fmt.Errorf("not halted; cursor %d", r.Cursor())
		}
		return nil
	})
	if r.Cursor() != 3 {
		t.Errorf("cursor at halt = %d, want 3", r.Cursor())
	}
	checkExactlyOnce(t, f.db, evs[:3])
}

// TestCursorBehindServerStateRestarts: a bbolt file restored from an older backup (cursor behind what
// the server's durable consumer acked) is replayed from its own cursor, not from the server's.
func TestCursorBehindServerStateRestarts(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	evs := publish(t, js, 20, "x")
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	r, cancel, done := start(t, f, events.StreamIdentity, counting(nil))
	waitCursor(t, r, 20, 10*time.Second)
	cancel()
	<-done
	// A fresh file: as if restored from before any event.
	f2 := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	r2, _, _ := start(t, f2, events.StreamIdentity, counting(nil))
	waitCursor(t, r2, 20, 10*time.Second)
	checkExactlyOnce(t, f2.db, evs)
	if r2.CaughtUpAt().IsZero() {
		t.Error("CaughtUpAt is zero after catching up")
	}
}

func mustGet(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := mf.Metric[0]
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			if v.Counter != nil {
				g.Set(v.Counter.GetValue())
			} else if v.Gauge != nil {
				g.Set(v.Gauge.GetValue())
			}
			return g
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

// TestConsumerDeletedUnderneathRecovers: the server loses the durable consumer (as after a consumer
// leader change gone wrong); the idle check notices and recreates it at the cursor, and later events
// are applied exactly once.
func TestConsumerDeletedUnderneathRecovers(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	evs := publish(t, js, 5, "x")
	r, _, _ := start(t, f, events.StreamIdentity, counting(nil))
	waitCursor(t, r, 5, 30*time.Second)
	if err := js.DeleteConsumer(context.Background(), events.StreamIdentity, "test"); err != nil {
		t.Fatal(err)
	}
	evs = append(evs, publish(t, js, 5, "x")...)
	waitCursor(t, r, 10, 30*time.Second)
	checkExactlyOnce(t, f.db, evs)
}

// TestEventStoredTwiceIsAppliedOnce: the same event stored twice in the stream (a re-publish outside
// JetStream's duplicate window, or across a cluster leader change) is applied once and counted.
func TestEventStoredTwiceIsAppliedOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	ctx := context.Background()
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	evs := publish(t, js, 3, "x")
	b, _ := events.Marshal(evs[1])
	if _, err := js.Publish(ctx, evs[1].Subject, b, jetstream.WithMsgID("other-"+evs[1].ID)); err != nil {
		t.Fatal(err)
	}
	evs = append(evs, publish(t, js, 2, "x")...)
	r, _, _ := start(t, f, events.StreamIdentity, counting(nil))
	waitCursor(t, r, 6, 20*time.Second)
	checkExactlyOnce(t, f.db, evs)
	if got := testutil.ToFloat64(mustGet(t, f.reg, "t_consumer_duplicates_total")); got != 1 {
		t.Errorf("duplicates_total = %v, want 1", got)
	}
}

// waitCursorAtLeast polls until r has applied at least seq.
func waitCursorAtLeast(t *testing.T, r *consumer.Runner, seq uint64, d time.Duration) {
	t.Helper()
	natstest.WaitFor(t, d, func() error {
		if c := r.Cursor(); c < seq {
			return fmt.Errorf("cursor %d, want at least %d", c, seq)
		}
		return nil
	})
}

// waitCursor polls until r's cursor is exactly seq.
func waitCursor(t *testing.T, r *consumer.Runner, seq uint64, d time.Duration) {
	t.Helper()
	natstest.WaitFor(t, d, func() error {
		if c := r.Cursor(); c != seq {
			return fmt.Errorf("cursor %d, want %d", c, seq)
		}
		return nil
	})
}

// publishBatch publishes evs as one batch message.
func publishBatch(t *testing.T, js jetstream.JetStream, evs []events.Event) {
	t.Helper()
	b, err := events.MarshalBatch(evs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), evs[0].Subject, b, jetstream.WithMsgID(evs[0].ID+"+batch")); err != nil {
		t.Fatal(err)
	}
}

func seatEvents(n int, reason string) []events.Event {
	var out []events.Event
	for i := 0; i < n; i++ {
		out = append(out, events.New("idp1", time.Now(), "", "", events.SeatRemoved{UserID: fmt.Sprintf("b%d", i), Email: "a@x", Reason: reason}))
	}
	return out
}

// TestBatchMessages: every event of a batch message is applied once, in order, in one commit with
// the message's cursor; a poison event inside a batch is skipped alone; a transient failure inside a
// batch retries the whole message without applying its earlier events twice.
func TestBatchMessages(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	f := fixture{db: openDB(t), js: js, reg: prometheus.NewRegistry()}
	first := seatEvents(5, "x")
	poison := seatEvents(1, "poison")
	second := append(append(seatEvents(2, "x"), poison...), seatEvents(2, "x")...)
	third := seatEvents(4, "x")
	publishBatch(t, js, first)
	publishBatch(t, js, second)
	publishBatch(t, js, third)
	r, _, _ := start(t, f, events.StreamIdentity, counting(map[string]int{third[2].ID: 2}))
	waitCursor(t, r, 3, 20*time.Second)
	good := append(append(append([]events.Event{}, first...), second[:2]...), second[3:]...)
	checkExactlyOnce(t, f.db, append(good, third...))
	if got := testutil.ToFloat64(mustGet(t, f.reg, "t_consumer_poison_total")); got != 1 {
		t.Errorf("poison_total = %v, want 1", got)
	}
}

// TestStateKeyMigratesDurableState: a file whose cursor and remembered event ids are kept under the
// durable name (written before the consumer had a state key) is read under the state key from then
// on, without reprocessing, and the old entries are gone.
func TestStateKeyMigratesDurableState(t *testing.T) {
	t.Parallel()
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{consumer.CursorBucket, consumer.SeenBucket} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte(consumer.CursorBucket)).Put([]byte("svc-r1"), binary.BigEndian.AppendUint64(nil, 42)); err != nil {
			return err
		}
		seen := tx.Bucket([]byte(consumer.SeenBucket))
		for _, k := range []string{"svc-r1\x00id1", "svc-r1\x00id2", "other\x00id3"} {
			if err := seen.Put([]byte(k), []byte{1}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, err := consumer.New(db, nil, consumer.Config{Stream: "S", Durable: "svc-r1", StateKey: "svc"}, counting(nil), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Cursor(); got != 42 {
		t.Errorf("Cursor() = %d, want 42 (migrated)", got)
	}
	var keys []string
	_ = db.View(func(tx *bolt.Tx) error {
		if got := consumer.ReadCursor(tx, "svc-r1"); got != 0 {
			t.Errorf("cursor under the durable name = %d, want none", got)
		}
		return tx.Bucket([]byte(consumer.SeenBucket)).ForEach(func(k, _ []byte) error { keys = append(keys, string(k)); return nil })
	})
	if want := []string{"other\x00id3", "svc\x00id1", "svc\x00id2"}; fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("seen keys = %q, want %q", keys, want)
	}
	// A second consumer with the same state key (the replica restarted under another id) keeps it.
	r2, err := consumer.New(db, nil, consumer.Config{Stream: "S", Durable: "svc-r2", StateKey: "svc"}, counting(nil), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r2.Cursor(); got != 42 {
		t.Errorf("Cursor() under a new durable = %d, want 42", got)
	}
}
