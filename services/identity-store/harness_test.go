package identitystore

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/broker"
)

const testToken = "test-admin-token"

// harness is an embedded JetStream plus an identity-store running against it, on a real bbolt file.
type harness struct {
	t   *testing.T
	emb *broker.Embedded
	nc  *nats.Conn
	js  jetstream.JetStream
	dir string
	cfg Config

	clock atomic.Int64 // event-time clock of the test's gens

	mu     sync.Mutex // guards the following
	addr   string     // the running service's listener
	svc    *service
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, emb: emb, nc: nc, js: js, dir: t.TempDir()}
	h.cfg = DefaultConfig()
	h.cfg.DataDir, h.cfg.AdminToken, h.cfg.SCIMBaseURL = h.dir, testToken, "http://scim.test"
	t.Cleanup(func() {
		h.stop()
		nc.Close()
		emb.Shutdown()
	})
	return h
}

var quietLog = slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError + 10}))

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// start runs the service until stop.
func (h *harness) start() *service { return h.startWith(nil) }

// startWith runs the service with a hook called before each event is applied.
func (h *harness) startWith(hook func(events.Event) error) *service {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	d := Deps{NC: h.nc, JS: h.js, Logger: quietLog, Registry: reg, Gatherer: reg, Listener: ln}
	s, err := newService(h.cfg, d)
	if err != nil {
		ln.Close()
		h.t.Fatal(err)
	}
	s.beforeApply = hook
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := s.serve(ctx)
		s.db.Close()
		done <- err
	}()
	h.mu.Lock()
	h.svc, h.reg, h.cancel, h.done, h.addr = s, reg, cancel, done, ln.Addr().String()
	h.mu.Unlock()
	return s
}

// stop stops the service (if running) and waits for it to release the file.
func (h *harness) stop() {
	h.mu.Lock()
	cancel, done := h.cancel, h.done
	h.cancel, h.done, h.svc = nil, nil, nil
	h.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	if err := <-done; err != nil {
		h.t.Errorf("service stopped with %v", err)
	}
}

func (h *harness) service() *service {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.svc
}

// publish puts events in their streams as a producer would and returns the last stream sequence.
func (h *harness) publish(evs ...events.Event) uint64 {
	h.t.Helper()
	var seq uint64
	for _, e := range evs {
		data, err := events.Marshal(e)
		if err != nil {
			h.t.Fatal(err)
		}
		ack, err := h.js.Publish(context.Background(), e.Subject, data, jetstream.WithMsgID(e.ID))
		if err != nil {
			h.t.Fatal(err)
		}
		seq = ack.Sequence
	}
	return seq
}

// publishRaw publishes bytes on a subject (for poison messages).
func (h *harness) publishRaw(subject string, data []byte) uint64 {
	h.t.Helper()
	ack, err := h.js.Publish(context.Background(), subject, data)
	if err != nil {
		h.t.Fatal(err)
	}
	return ack.Sequence
}

func (h *harness) lastSeq(stream string) uint64 {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.LastSeq
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// caughtUp waits until every consumer applied its whole stream and the outbox is drained.
func (h *harness) caughtUp() {
	h.t.Helper()
	s := h.service()
	for _, c := range []struct {
		stream string
		cur    func() uint64
	}{{events.StreamSCIM, s.scim.Cursor}, {events.StreamAuth, s.auth.Cursor}} {
		want := h.lastSeq(c.stream)
		eventually(h.t, c.stream+" applied", func() bool { return c.cur() >= want })
	}
	h.drain()
	// The identity consumer reads what the relay published.
	want := h.lastSeq(events.StreamIdentity)
	eventually(h.t, "IDENTITY applied", func() bool { return s.ident.Cursor() >= want })
}

func (h *harness) waitSeq(cur func() uint64, seq uint64) {
	h.t.Helper()
	eventually(h.t, fmt.Sprintf("sequence %d applied", seq), func() bool { return cur() >= seq })
}

func (h *harness) drain() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.service().relay.WaitDrained(ctx); err != nil {
		h.t.Fatalf("outbox not drained: %v", err)
	}
}

func (h *harness) view(f func(tx *bolt.Tx) error) {
	h.t.Helper()
	if err := h.service().db.View(f); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) user(uid string) *user {
	h.t.Helper()
	var u *user
	h.view(func(tx *bolt.Tx) error {
		var err error
		u, err = getUser(tx, uid)
		return err
	})
	return u
}

func (h *harness) userByEmail(idp, email string) *user {
	h.t.Helper()
	var u *user
	h.view(func(tx *bolt.Tx) error {
		var err error
		u, err = getUser(tx, lookupEmail(tx, idp, email))
		return err
	})
	return u
}

// dump is the canonical dump of the running store.
func (h *harness) dump() string {
	h.t.Helper()
	var b bytes.Buffer
	h.view(func(tx *bolt.Tx) error { return boltdb.Dump(tx, &b, DumpSkip...) })
	return b.String()
}

// replayDump rebuilds the registry from the streams into a fresh file and dumps it.
func (h *harness) replayDump() string {
	h.t.Helper()
	path := filepath.Join(h.t.TempDir(), "replay.db")
	if err := ReplayWith(context.Background(), h.js, path, ReplayOptions{SCIMLogRetention: h.cfg.retention()}); err != nil {
		h.t.Fatal(err)
	}
	var b bytes.Buffer
	if err := DumpFile(path, &b); err != nil {
		h.t.Fatal(err)
	}
	return b.String()
}

// streamEvents returns every event of a stream.
func (h *harness) streamEvents(stream string) []events.Event {
	h.t.Helper()
	last := h.lastSeq(stream)
	st, _ := h.js.Stream(context.Background(), stream)
	var out []events.Event
	for seq := uint64(1); seq <= last; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			h.t.Fatal(err)
		}
		evs, err := events.DecodeMessage(m.Subject, m.Data)
		if err != nil {
			continue
		}
		out = append(out, evs...)
	}
	return out
}

// causedBy returns the types of the IDENTITY events caused by the event with id parent.
func (h *harness) causedBy(parent string) []string {
	h.t.Helper()
	var out []string
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if e.CausationID == parent {
			out = append(out, e.Type)
		}
	}
	return out
}

// gen makes events for one IdP. Event times come from a clock shared by every gen of a test, so
// they increase in publish order across IdPs and streams, as wall-clock event times do in production
// (Replay merges the streams by event time).
type gen struct {
	idp   string
	clock *atomic.Int64
}

var epoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func newGen(clock *atomic.Int64, idp string) *gen { return &gen{idp: idp, clock: clock} }

// gen returns an event generator for idp on the harness's clock.
func (h *harness) gen(idp string) *gen { return newGen(&h.clock, idp) }

func (g *gen) next() time.Time {
	return epoch.Add(time.Duration(g.clock.Add(1)) * time.Second)
}

func (g *gen) ev(p events.Payload) events.Event {
	at := g.next()
	return events.New(g.idp, at, fmt.Sprintf("req-%s-%d", g.idp, at.Unix()), "", p)
}

func pol(mode string, user, seat bool) events.Policy {
	return events.Policy{IdentityUpdateBehavior: mode, UserDeprovision: user, SeatDeprovision: seat}
}

func scimUser(id, email, display string, active bool, version int64, p events.Policy) events.SCIMUserUpserted {
	return events.SCIMUserUpserted{UserID: id, UserName: email, Email: email, DisplayName: display, Active: active,
		Attributes: map[string]any{"userName": email, "displayName": display, "active": active},
		Changed:    []string{"displayName"}, Created: version == 1, ResourceVersion: version, Policy: p}
}

func login(uid, email, name, sess string, scim bool, at time.Time, groups ...string) events.LoggedIn {
	return events.LoggedIn{UserID: uid, Email: email, Sub: "sub-" + email, Name: name, Groups: groups,
		SessionIDHash: sess, SCIMEnabled: scim, IssuedAt: at, ExpiresAt: at.AddDate(10, 0, 0)}
}

func (g *gen) evAt(at time.Time, p events.Payload) events.Event {
	return events.New(g.idp, at, fmt.Sprintf("req-%s-%d", g.idp, at.Unix()), "", p)
}

// login makes a LoggedIn event issued at its own event time.
func (g *gen) login(email, name, sess string, scim bool, groups ...string) events.Event {
	at := g.next()
	return g.evAt(at, login(events.UserID(g.idp, email), email, name, sess, scim, at, groups...))
}

// readable turns a canonical dump (hex keys and values) into text for diffs.
func readable(dump string) string {
	var b strings.Builder
	for _, line := range strings.Split(dump, "\n") {
		k, v, _ := strings.Cut(line, "=")
		var parts []string
		for _, p := range strings.Split(k, "/") {
			raw, err := hex.DecodeString(p)
			if err != nil {
				parts = append(parts, p)
				continue
			}
			parts = append(parts, strconv.Quote(string(raw)))
		}
		b.WriteString(strings.Join(parts, "/"))
		if v != "" {
			raw, _ := hex.DecodeString(v)
			b.WriteString(" = " + strconv.Quote(string(raw)))
		}
		b.WriteByte('\n')
	}
	return b.String()
}
