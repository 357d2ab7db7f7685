package reliability

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// singleStack starts one nats-server and the three services.
func singleStack(t *testing.T, o stackOptions) (*stack, *natsNode, jetstream.JetStream) {
	t.Helper()
	dir := t.TempDir()
	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	o.natsURL = n.url()
	s := newStack(t, dir, o)
	nc, js := jsConnect(t, n.url())
	t.Cleanup(nc.Close)
	return s, n, js
}

// TestSecondProcessSameDataDir is P19: a second process of each service on a running one's data dir
// exits at once with a clear error, and the first keeps serving.
func TestSecondProcessSameDataDir(t *testing.T) {
	t.Parallel()
	s, _, _ := singleStack(t, stackOptions{})
	for _, sv := range s.services() {
		second := &proc{name: sv.svc + "-second", args: sv.args, log: filepath.Join(s.dir, sv.svc+"-second.log"),
			env: append(append([]string{}, sv.env...), fmt.Sprintf("SCIMFLOW_%s_LISTEN=127.0.0.1:%d", strings.ToUpper(strings.ReplaceAll(sv.svc, "-", "_")), freePort(t)))}
		start := time.Now()
		second.start(t)
		err, exited := second.waitExit(30 * time.Second)
		if !exited {
			second.kill(t)
			t.Errorf("second %s on %s still running after 30s, want a fast failure", sv.svc, sv.dataDir)
			continue
		}
		out := second.logTail(5)
		if err == nil || !strings.Contains(out, "in use") {
			t.Errorf("second %s exited with %v and %q, want a non-zero exit saying the data dir is in use", sv.svc, err, out)
		}
		t.Logf("FIGURES second-process %s: exited after %s with %v: %s", sv.svc, time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(lastLine(out)))
		sv.waitReady(t, 10*time.Second)
	}
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// TestPoisonEvent is P17: events in the SCIM stream that can never be applied (undecodable JSON; a
// known type with an unknown version) are termed, counted in …_consumer_poison_total, and the
// consumer goes on with the writes after them; the replay skips them the same way.
func TestPoisonEvent(t *testing.T) {
	t.Parallel()
	s, _, js := singleStack(t, stackOptions{})
	w := newWorkload(s.scim(), "poison", 2)
	w.start(5)
	w.wg.Wait()
	ctx := context.Background()
	poison := []*nats.Msg{
		{Subject: fmt.Sprintf("scim.%s.user.poison1.upserted", s.idp.ID), Data: []byte(`{"this is": not json`)},
		{Subject: fmt.Sprintf("scim.%s.user.poison2.upserted", s.idp.ID), Data: []byte(`{"id":"01J00000000000000000000000","type":"scim.user.upserted","version":99,"occurred_at":"2026-01-01T00:00:00Z","idp_id":"` + s.idp.ID + `","subject":"x","data":{}}`)},
	}
	for i, m := range poison {
		m.Header = nats.Header{"Nats-Msg-Id": {fmt.Sprintf("poison-%d", i)}}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	w2 := newWorkload(s.scim(), "after-poison", 2)
	w2.start(5)
	w2.wg.Wait()
	w.merge(w2)
	if err := poll(ctx, 30*time.Second, func() error {
		v, err := metric(s.store.metricsURL(), "scimflow_identity_store_consumer_poison_total", `consumer="identitystore-scim"`)
		if err == nil && v != float64(len(poison)) {
			err = fmt.Errorf("poison_total = %v, want %d", v, len(poison))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if v, err := metric(s.store.metricsURL(), "scimflow_identity_store_consumer_halted", `consumer="identitystore-scim"`); err != nil || v != 0 {
		t.Errorf("halted = %v (%v), want 0: poison must not stop the consumer", v, err)
	}
	f := s.verify(t, js, w, "poison", time.Time{})
	t.Logf("FIGURES poison: %d poison events termed and counted; %s", len(poison), f)
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("poison: %s", f)
	}
}

// TestTruncatedStream is P15: identity-store is stopped, more writes arrive, and the SCIM stream
// loses them (its max age is cut to one second from the test, then restored) before identity-store
// starts again. The consumer must halt with …_consumer_halted = 1 and apply nothing past its cursor —
// never skip silently — even when later writes arrive.
func TestTruncatedStream(t *testing.T) {
	t.Parallel()
	s, _, js := singleStack(t, stackOptions{})
	ctx := context.Background()
	w := newWorkload(s.scim(), "before-truncation", 2)
	w.start(5)
	w.wg.Wait()
	s.waitDrained(t, js, 60*time.Second)
	cursor, err := metric(s.store.metricsURL(), "scimflow_identity_store_consumer_cursor_sequence", `consumer="identitystore-scim"`)
	if err != nil {
		t.Fatal(err)
	}
	s.store.stop(t)
	lost := newWorkload(s.scim(), "truncated", 2)
	lost.start(3)
	lost.wg.Wait()

	st, err := js.Stream(ctx, events.StreamSCIM)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	dup := cfg.Duplicates
	cfg.MaxAge, cfg.Duplicates = time.Second, time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("cut max age: %v", err)
	}
	if err := poll(ctx, 30*time.Second, func() error {
		i, err := st.Info(ctx)
		if err == nil && i.State.FirstSeq <= uint64(cursor)+1 {
			err = fmt.Errorf("first seq %d, cursor %v", i.State.FirstSeq, cursor)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cfg.MaxAge, cfg.Duplicates = 0, dup
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("restore max age: %v", err)
	}
	later := newWorkload(s.scim(), "after-truncation", 1)
	later.start(2)
	later.wg.Wait()

	s.store.start(t)
	if err := poll(ctx, 60*time.Second, func() error {
		v, err := metric(s.store.metricsURL(), "scimflow_identity_store_consumer_halted", `consumer="identitystore-scim"`)
		if err == nil && v != 1 {
			err = fmt.Errorf("halted = %v", v)
		}
		return err
	}); err != nil {
		t.Fatalf("identity-store did not halt on the truncated stream: %v\n%s", err, s.store.logTail(20))
	}
	// Halted means nothing after the cursor was applied: the cursor stays, and none of the writes
	// after the gap (those lost and those after them) reached the registry.
	for range 3 {
		v, err := metric(s.store.metricsURL(), "scimflow_identity_store_consumer_cursor_sequence", `consumer="identitystore-scim"`)
		if err != nil || v != cursor {
			t.Errorf("cursor = %v (%v) after halting, want it to stay %v", v, err, cursor)
		}
	}
	for _, wl := range []*workload{lost, later} {
		for _, name := range wl.order {
			var rows []struct {
				ID string `json:"id"`
			}
			if _, err := s.admin(ctx, "GET", "/api/v1/users?email="+strings.ToLower(name), nil, &rows); err != nil {
				t.Fatal(err)
			}
			if len(rows) != 0 {
				t.Errorf("user %s is in the registry although its events were truncated or come after the gap: a silent skip", name)
			}
		}
	}
	t.Logf("FIGURES truncation: cursor %v, stream first seq beyond it; consumer halted (metric 1), %d writes after the gap not applied", cursor, len(lost.order)+len(later.order))
	if strings.Contains(s.store.logTail(200), "halt") {
		t.Logf("identity-store logged the halt")
	} else {
		t.Errorf("identity-store log does not mention the halt:\n%s", s.store.logTail(20))
	}
}
