package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/testkit/natstest"
)

func appendN(t *testing.T, db *bolt.DB, n int) []events.Event {
	t.Helper()
	var evs []events.Event
	for i := 0; i < n; i++ {
		evs = append(evs, events.New("idp1", time.Now(), "req", "", events.SeatRemoved{UserID: fmt.Sprintf("u%d", i), Email: "a@x", Reason: "t"}))
	}
	err := db.Update(func(tx *bolt.Tx) error { return outbox.Append(tx, time.Now(), evs...) })
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// streamIDs reads every event id in the IDENTITY stream with its multiplicity.
func streamIDs(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ids, _ := streamRead(t, js, events.StreamIdentity)
	return ids
}

// streamRead reads every event id in stream with its multiplicity, and the number of messages. It
// checks the Msg-Id rule: a message's id is its first event's id, plus "+n" when it holds n > 1.
func streamRead(t *testing.T, js jetstream.JetStream, stream string) (map[string]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	msgs := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			t.Fatalf("stream message %d: %v", seq, err)
		}
		want := evs[0].ID
		if len(evs) > 1 {
			want += fmt.Sprintf("+%d", len(evs))
		}
		if m.Header.Get("Nats-Msg-Id") != want {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", seq, m.Header.Get("Nats-Msg-Id"), want)
		}
		for _, e := range evs {
			out[e.ID]++
		}
		msgs++
	}
	return out, msgs
}

func runRelay(t *testing.T, db *bolt.DB, js jetstream.JetStream) (*outbox.Relay, context.CancelFunc, chan struct{}) {
	t.Helper()
	r, err := outbox.NewRelay(db, js, outbox.RelayConfig{MetricsPrefix: "t", PublishWait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, cancel, done
}

// TestOutageNothingLostNothingDuplicated: records appended while NATS is down stay in the outbox
// (depth reported) and are all published, each once, after NATS returns; a relay restarted on the
// same file resumes where the previous one stopped.
func TestOutageNothingLostNothingDuplicated(t *testing.T) {
	t.Parallel()
	srv, js, db := setup(t)
	r, cancel, done := runRelay(t, db, js)
	want := appendN(t, db, 50)
	r.Notify()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatalf("WaitDrained = %v", err)
	}

	srv.Stop()
	want = append(want, appendN(t, db, 40)...)
	r.Notify()
	r.Refresh()
	if d := r.Depth(); d != 40 {
		t.Errorf("Depth() during outage = %d, want 40", d)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if r.OldestAge() <= 0 {
			return fmt.Errorf("oldest age %v", r.OldestAge())
		}
		return nil
	})
	cancel() // the relay process "restarts" while NATS is still down
	<-done
	srv.Restart()
	r2, _, _ := runRelay(t, db, js)
	want = append(want, appendN(t, db, 10)...)
	r2.Notify()
	if err := r2.WaitDrained(ctx); err != nil {
		t.Fatalf("WaitDrained after outage = %v", err)
	}
	got := streamIDs(t, js)
	for _, e := range want {
		if got[e.ID] != 1 {
			t.Errorf("event %s in stream %d times, want 1", e.ID, got[e.ID])
		}
	}
	if len(got) != len(want) {
		t.Errorf("stream holds %d events, want %d", len(got), len(want))
	}
	if r2.Depth() != 0 || r2.OldestAge() != 0 {
		t.Errorf("after drain depth %d oldest %v, want 0 0", r2.Depth(), r2.OldestAge())
	}
}

// TestRollbackPublishesNothing: records appended in a transaction that rolls back never reach NATS.
func TestRollbackPublishesNothing(t *testing.T) {
	t.Parallel()
	_, js, db := setup(t)
	r, _, _ := runRelay(t, db, js)
	db.Update(func(tx *bolt.Tx) error {
		outbox.Append(tx, time.Now(), events.New("idp1", time.Now(), "", "", events.SeatRemoved{UserID: "rolled", Email: "a@x"}))
		return fmt.Errorf("abort")
	})
	kept := appendN(t, db, 1)
	r.Notify()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	got := streamIDs(t, js)
	if len(got) != 1 || got[kept[0].ID] != 1 {
		t.Errorf("stream = %v, want only %s", got, kept[0].ID)
	}
}

// TestOversizedRecordIsDeadLetteredNotBlocking: a record JetStream can never accept is moved aside
// (counted, logged) and the records after it are still published.
func TestOversizedRecordIsDeadLetteredNotBlocking(t *testing.T) {
	t.Parallel()
	_, js, db := setup(t)
	r, _, _ := runRelay(t, db, js)
	big := events.New("idp1", time.Now(), "", "", events.SCIMLog{Method: "POST", Status: events.LogError,
		RequestBody: json.RawMessage(`"` + strings.Repeat("x", 1<<20+10) + `"`)})
	if err := db.Update(func(tx *bolt.Tx) error { return outbox.Append(tx, time.Now(), big) }); err != nil {
		t.Fatal(err)
	}
	after := appendN(t, db, 3)
	r.Notify()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatalf("WaitDrained = %v (an oversized record blocks the outbox)", err)
	}
	got := streamIDs(t, js)
	if len(got) != 3 || got[big.ID] != 0 {
		t.Errorf("stream = %d events (big one %d times), want the 3 after it", len(got), got[big.ID])
	}
	for _, e := range after {
		if got[e.ID] != 1 {
			t.Errorf("event %s published %d times, want 1", e.ID, got[e.ID])
		}
	}
	var dead int
	db.View(func(tx *bolt.Tx) error { dead = tx.Bucket([]byte(outbox.DeadBucket)).Stats().KeyN; return nil })
	if dead != 1 {
		t.Errorf("dead letters = %d, want 1", dead)
	}
}

// setup starts a JetStream server with scimflow's streams and opens a fresh outbox file.
func setup(t *testing.T) (*natstest.Server, jetstream.JetStream, *bolt.DB) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "o.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return srv, js, db
}

// appendTx appends n events in one transaction, on the priority lane when prio is set.
func appendTx(t *testing.T, db *bolt.DB, n int, prio bool) []events.Event {
	t.Helper()
	var evs []events.Event
	for i := 0; i < n; i++ {
		evs = append(evs, events.New("idp1", time.Now(), "req", "", events.SessionsRevoked{UserID: fmt.Sprintf("u%d", i), Email: "a@x", RevokedBefore: time.Now(), Reason: "t"}))
	}
	err := db.Update(func(tx *bolt.Tx) error {
		if prio {
			return outbox.AppendPriority(tx, time.Now(), evs...)
		}
		return outbox.Append(tx, time.Now(), evs...)
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestOneMessagePerTransaction: the events of one transaction travel in one message (split at 256
// events), in order, so messages per write — what the server fsyncs for — do not grow with the
// events a write causes.
func TestOneMessagePerTransaction(t *testing.T) {
	t.Parallel()
	_, js, db := setup(t)
	var want []events.Event
	for _, n := range []int{300, 1, 2} {
		want = append(want, appendTx(t, db, n, false)...)
	}
	r, _, _ := runRelay(t, db, js)
	r.Notify()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	got, msgs := streamRead(t, js, events.StreamIdentity)
	if msgs != 4 {
		t.Errorf("messages = %d, want 4 (256+44, 1, 2)", msgs)
	}
	for _, e := range want {
		if got[e.ID] != 1 {
			t.Errorf("event %s in stream %d times, want 1", e.ID, got[e.ID])
		}
	}
	// Order inside the stream is commit order.
	st, _ := js.Stream(ctx, events.StreamIdentity)
	var order []string
	for seq := uint64(1); seq <= 4; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			order = append(order, e.ID)
		}
	}
	for i, e := range want {
		if order[i] != e.ID {
			t.Fatalf("stream order differs at %d: %s, want %s", i, order[i], e.ID)
		}
	}
}

// TestRepublishIsDeduplicated: records published but not yet deleted when the relay died (simulated
// by putting the published records back) are republished as the same messages with the same
// Msg-Ids, and JetStream drops them: the stream holds each event once.
func TestRepublishIsDeduplicated(t *testing.T) {
	t.Parallel()
	_, js, db := setup(t)
	want := appendTx(t, db, 300, false)
	want = append(want, appendTx(t, db, 3, false)...)
	saved := map[string][]byte{}
	db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(outbox.Bucket)).ForEach(func(k, v []byte) error {
			saved[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	r, cancel, done := runRelay(t, db, js)
	r.Notify()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	_, before := streamRead(t, js, events.StreamIdentity)
	db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(outbox.Bucket))
		for k, v := range saved {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	r2, _, _ := runRelay(t, db, js)
	r2.Notify()
	if err := r2.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	got, after := streamRead(t, js, events.StreamIdentity)
	if after != before {
		t.Errorf("messages after republish = %d, want %d (deduplicated)", after, before)
	}
	for _, e := range want {
		if got[e.ID] != 1 {
			t.Errorf("event %s in stream %d times, want 1", e.ID, got[e.ID])
		}
	}
}

// TestPriorityLaneIndependent: priority records reach the priority stream on prefixed subjects while
// the ordered lane cannot publish at all.
func TestPriorityLaneIndependent(t *testing.T) {
	t.Parallel()
	_, js, db := setup(t)
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := js.DeleteStream(ctx, events.StreamIdentity); err != nil {
		t.Fatal(err)
	}
	appendTx(t, db, 5, false) // cannot be published: no stream captures it now
	prio := appendTx(t, db, 2, true)
	r, _, _ := runRelay(t, db, js)
	r.Notify()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if d := r.PriorityDepth(); d != 0 {
			return fmt.Errorf("priority depth %d", d)
		}
		return nil
	})
	got, msgs := streamRead(t, js, events.StreamIdentityPriority)
	if msgs != 1 || got[prio[0].ID] != 1 || got[prio[1].ID] != 1 {
		t.Errorf("priority stream = %v in %d messages, want both events in 1", got, msgs)
	}
	st, _ := js.Stream(ctx, events.StreamIdentityPriority)
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := events.PriorityPrefix + prio[0].Subject; m.Subject != want {
		t.Errorf("priority message subject = %q, want %q", m.Subject, want)
	}
	if r.Depth() != 5 {
		t.Errorf("ordered depth = %d, want 5 (still waiting)", r.Depth())
	}
}

// dropJS is a JetStream whose n-th async publish (counting from 1) never reaches the server and
// fails the way a publish does when the stream has no leader for a moment (no responders), while
// the publishes after it go through: what a SIGKILLed or partitioned stream leader does to a burst
// of async publishes when the new leader takes over in the middle of it.
type dropJS struct {
	jetstream.JetStream
	mu    sync.Mutex
	calls int
	drop  int
}

func (d *dropJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	d.mu.Lock()
	d.calls++
	drop := d.calls == d.drop
	d.mu.Unlock()
	if drop {
		f := &droppedFuture{msg: m, err: make(chan error, 1)}
		f.err <- jetstream.ErrNoStreamResponse
		return f, nil
	}
	return d.JetStream.PublishMsgAsync(m, opts...)
}

type droppedFuture struct {
	msg *nats.Msg
	err chan error
}

func (f *droppedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f *droppedFuture) Err() <-chan error            { return f.err }
func (f *droppedFuture) Msg() *nats.Msg               { return f.msg }

// lateJS is a JetStream whose n-th async publish reaches the server only after the (n+1)-th was
// answered, and succeeds: what nats.go's retry of a no-responders publish (each message on its own
// 250 ms timer) does when a new stream leader takes over between two retry waves — the later
// message's retry lands first, the earlier one's next retry after it, and the relay sees no error.
type lateJS struct {
	jetstream.JetStream
	mu    sync.Mutex
	calls int
	late  int
	held  *nats.Msg
	hopts []jetstream.PublishOpt
	hfut  *forwardFuture
}

func (d *lateJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	d.mu.Lock()
	d.calls++
	n := d.calls
	d.mu.Unlock()
	switch n {
	case d.late:
		d.held, d.hopts = m, opts
		d.hfut = &forwardFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
		return d.hfut, nil
	case d.late + 1:
		f, err := d.JetStream.PublishMsgAsync(m, opts...)
		if err != nil {
			return nil, err
		}
		go func() {
			select {
			case <-f.Ok():
			case <-f.Err():
			}
			hf, err := d.JetStream.PublishMsgAsync(d.held, d.hopts...)
			if err != nil {
				d.hfut.err <- err
				return
			}
			select {
			case a := <-hf.Ok():
				d.hfut.ok <- a
			case err := <-hf.Err():
				d.hfut.err <- err
			}
		}()
		return f, nil
	}
	return d.JetStream.PublishMsgAsync(m, opts...)
}

type forwardFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *forwardFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *forwardFuture) Err() <-chan error            { return f.err }
func (f *forwardFuture) Msg() *nats.Msg               { return f.msg }

// streamOrder returns the event ids of stream in stream order, first copies only.
func streamOrder(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			t.Fatalf("stream message %d: %v", seq, err)
		}
		for _, e := range evs {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e.ID)
			}
		}
	}
	return out
}

// TestDroppedPublishKeepsStreamOrder: a burst of async publishes that reaches a stream out of order
// — one message dropped while the ones after it are stored (no leader at that instant, then a new
// one), or one message arriving after its successor without any error (nats.go retries each
// no-responders publish on its own timer; the new leader took over between two retry waves) — must
// still be stored in commit order. The stream is the apply order of every projection; out of
// order, identity-store applied a user's deletion before the user's creation, recorded the SCIM
// user as deleted, then skipped the creation as stale, and the registry never held the user (the
// registry loss of docs/reliability.md).
func TestDroppedPublishKeepsStreamOrder(t *testing.T) {
	t.Parallel()
	for _, lane := range []struct {
		name   string
		prio   bool
		stream string
		js     func(jetstream.JetStream) jetstream.JetStream
	}{
		{"dropped/ordered", false, events.StreamIdentity, func(js jetstream.JetStream) jetstream.JetStream { return &dropJS{JetStream: js, drop: 2} }},
		{"dropped/priority", true, events.StreamIdentityPriority, func(js jetstream.JetStream) jetstream.JetStream { return &dropJS{JetStream: js, drop: 2} }},
		{"late/ordered", false, events.StreamIdentity, func(js jetstream.JetStream) jetstream.JetStream { return &lateJS{JetStream: js, late: 2} }},
		{"late/priority", true, events.StreamIdentityPriority, func(js jetstream.JetStream) jetstream.JetStream { return &lateJS{JetStream: js, late: 2} }},
	} {
		t.Run(lane.name, func(t *testing.T) {
			t.Parallel()
			_, js, db := setup(t)
			var want []string
			for range 5 { // five transactions: five messages in one round
				for _, e := range appendTx(t, db, 2, lane.prio) {
					want = append(want, e.ID)
				}
			}
			r, _, _ := runRelay(t, db, lane.js(js))
			r.Notify()
			ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
			defer stop()
			if err := r.WaitDrained(ctx); err != nil {
				t.Fatal(err)
			}
			if got := streamOrder(t, js, lane.stream); !slices.Equal(got, want) {
				t.Errorf("stream order = %v, want the commit order %v", got, want)
			}
		})
	}
}

// TestForeignMessageDoesNotBlockTheChain: a message another publisher put into the stream between
// two of the relay's (an operator, a test's poison message) makes JetStream refuse the relay's next
// message, expected at the place the foreign one took; the relay reads the stream's last sequence
// again, republishes, and goes on.
func TestForeignMessageDoesNotBlockTheChain(t *testing.T) {
	t.Parallel()
	_, js, db := setup(t)
	first := appendTx(t, db, 2, false)
	r, _, _ := runRelay(t, db, js)
	r.Notify()
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, first[0].Subject, []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	second := appendTx(t, db, 2, false)
	r.Notify()
	if err := r.WaitDrained(ctx); err != nil {
		t.Fatalf("WaitDrained after a foreign message = %v", err)
	}
	st, err := js.Stream(ctx, events.StreamIdentity)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := events.DecodeMessage(m.Subject, m.Data)
	if err != nil || len(evs) != 2 || evs[0].ID != second[0].ID || evs[1].ID != second[1].ID {
		t.Errorf("message 3 = %d events %v, want the second transaction's", len(evs), err)
	}
}
