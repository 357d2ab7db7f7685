package reliability

import (
	"fmt"
	"testing"
	"time"
)

// TestNATSOutage is P12/P26 with the outbox: nats-server is SIGKILLed under load and kept down for
// a while (5 s; 30 s in the long run). SCIM writes keep succeeding through scim-ingest's outbox
// until admission control refuses bulk writes (the outbox's oldest record older than
// admission_max_lag, or its depth at outbox_max_depth, set low here) with 429 and Retry-After —
// never a 2xx that is later lost; deletions (security facts) are still admitted. After NATS restarts on the same store everything
// drains and both oracles hold.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	s := newStack(t, dir, stackOptions{natsURL: n.url(), env: map[string][]string{
		"scim-ingest": {"SCIMFLOW_SCIM_INGEST_OUTBOX_MAX_DEPTH=400"},
	}})
	nc, js := jsConnect(t, n.url())
	defer nc.Close()

	w := newWorkload(s.scim(), "outage", 4)
	w.start(1 << 20)
	waitUsers(t, w, 20)
	outage := 5 * time.Second
	if long {
		outage = 30 * time.Second
	}
	ackedBefore, rejectedBefore := w.acked.Load(), w.status503.Load()+w.status429.Load()
	n.kill(t)
	down := time.Now()
	// The outage lasts a fixed wall-clock time; the workload keeps writing meanwhile.
	time.Sleep(outage)
	ackedDuring, rejectedDuring := w.acked.Load()-ackedBefore, w.status503.Load()+w.status429.Load()-rejectedBefore
	n.restart(t)
	restarted := time.Now()
	// The backlog is gone once the oldest unpublished record is younger than a second.
	if err := poll(t.Context(), 120*time.Second, func() error {
		v, err := metric(s.ingest.baseURL(), "scimflow_scim_ingest_outbox_oldest_age_seconds")
		if err == nil && v >= 1 {
			err = fmt.Errorf("oldest outbox record %.1fs old", v)
		}
		return err
	}); err != nil {
		t.Fatalf("outbox backlog not published after NATS came back: %v", err)
	}
	backlog := time.Since(restarted)
	t.Logf("NATS down for %s: %d writes acknowledged (through the outbox), %d answered 503/429", time.Since(down).Round(time.Millisecond), ackedDuring, rejectedDuring)
	if ackedDuring == 0 {
		t.Errorf("no SCIM write was acknowledged while NATS was down; the outbox should absorb them")
	}
	if w.missingRetryAfter.Load() > 0 {
		t.Errorf("%d 503/429 answers without Retry-After", w.missingRetryAfter.Load())
	}
	waitUsers(t, w, w.count()+8)
	w.finish()
	f := s.verify(t, js, w, "nats-outage", restarted)
	t.Logf("FIGURES nats-outage: outage %s, %d writes acknowledged during it, %d refused with 503/429 (admission control; bound 400 events), backlog published %s after NATS restarted", outage, ackedDuring, rejectedDuring, backlog.Round(time.Millisecond))
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("NATS outage: %s", f)
	}
}

// waitUsers polls until the workload has started at least n users.
func waitUsers(t testing.TB, w *workload, n int) {
	t.Helper()
	if err := poll(t.Context(), 120*time.Second, func() error {
		if w.count() < n {
			return fmt.Errorf("%d users, want %d", w.count(), n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
