package reliability

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// killScenario runs the workload against a single nats-server and SIGKILLs the chosen service at
// random points, restarting it each time (P1 for identity-store; the same for scim-ingest and auth),
// then checks both oracles.
func killScenario(t *testing.T, victim func(*stack) *service, name string) {
	dir := t.TempDir()
	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	s := newStack(t, dir, stackOptions{natsURL: n.url()})
	nc, js := jsConnect(t, n.url())
	defer nc.Close()

	w := newWorkload(s.scim(), "kill-"+name, 4)
	w.start(1 << 20)
	kills := iterations(4, 60)
	v := victim(s)
	var down time.Duration
	for i := range kills {
		// A random point: between 50 and 650 ms of load since the last restart.
		time.Sleep(time.Duration(50+rand.IntN(600)) * time.Millisecond)
		v.kill(t)
		start := time.Now()
		v.start(t)
		v.waitReady(t, 60*time.Second)
		down += time.Since(start)
		t.Logf("kill %d/%d of %s: ready again after %s (%d users so far)", i+1, kills, name, time.Since(start).Round(time.Millisecond), w.count())
	}
	// A little load after the last restart, so the recovered process also serves.
	target := w.count() + 8
	if err := poll(t.Context(), 60*time.Second, func() error {
		if w.count() < target {
			return fmt.Errorf("%d users, want %d", w.count(), target)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	w.finish()
	f := s.verify(t, js, w, "kill-"+name, time.Time{})
	t.Logf("FIGURES kill-%s: %d SIGKILLs, mean time to ready %s", name, kills, (down / time.Duration(kills)).Round(time.Millisecond))
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("kill %s: %s", name, f)
	}
}

// TestKillSCIMIngest: SIGKILL of scim-ingest under load loses no acknowledged write and creates no
// duplicate; the IdP's retries of unanswered writes are idempotent.
func TestKillSCIMIngest(t *testing.T) {
	t.Parallel()
	killScenario(t, func(s *stack) *service { return s.ingest }, "scim-ingest")
}

// TestKillIdentityStore is P1: SIGKILL of identity-store mid-stream; after catch-up the registry
// equals a clean replay and nothing was applied twice.
func TestKillIdentityStore(t *testing.T) {
	t.Parallel()
	killScenario(t, func(s *stack) *service { return s.store }, "identity-store")
}

// TestKillAuth: SIGKILL of auth under load changes nothing in the SCIM pipeline, and auth comes back.
func TestKillAuth(t *testing.T) {
	t.Parallel()
	killScenario(t, func(s *stack) *service { return s.auth }, "auth")
}
