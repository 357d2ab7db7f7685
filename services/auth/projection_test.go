package auth

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/consumer"
	"github.com/scimflow/scimflow/internal/outbox"
)

// streamLast returns the last sequence of stream.
func streamLast(t *testing.T, n *natsEnv, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// waitCaughtUp waits until both of r's consumers applied everything in their streams.
func waitCaughtUp(t *testing.T, n *natsEnv, r *replica) {
	t.Helper()
	waitFor(t, "projection caught up", 20*time.Second, func() error {
		if r.srv.identityRn.Cursor() != streamLast(t, n, events.StreamIdentity) || r.srv.authRn.Cursor() != streamLast(t, n, events.StreamAuth) {
			return errNotYet
		}
		return nil
	})
}

// dbHash is the canonical hash of a stopped replica's file, without the outbox (transport state).
func dbHash(t *testing.T, dir string) string {
	t.Helper()
	db, err := boltdb.Open(filepath.Join(dir, Name+".db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h, err := boltdb.Hash(db, outbox.Bucket, consumer.PoisonBucket, consumer.SeenBucket, bucketReplica)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestProjectionRestartAndReplay: a restarted replica keeps its revocation state (revoked sessions
// stay rejected from its first answer), and rebuilding the projection from the streams into an
// empty file gives a byte-identical file (docs/design.md §2.3), local logout writes included.
func TestProjectionRestartAndReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	dir := t.TempDir()
	ext := h.r.srv.cfg.ExternalURL
	r2 := h.startReplica("r2", func(c *Config) { c.DataDir, c.ExternalURL = dir, ext })
	uid := events.UserID("idp-a", aliceEmail)

	revoked := h.mustLogin(newBrowser(), r2, "idp-a")
	b := newBrowser()
	loggedOut := h.mustLogin(b, r2, "idp-a")
	if resp, _ := b.get(t, r2.url+"/logout"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout = %d", resp.StatusCode)
	}
	at := h.clock.Now()
	h.n.publish(t, identityEvent("idp-a", at.Add(-time.Second), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive,
		Groups: []events.Group{{ID: "g", Name: "G"}}, OIDCFields: map[string]any{"department": "R&D", "n": 1.5}}))
	h.n.publish(t, events.New("idp-a", at, "c", "", events.SessionsRevoked{UserID: uid, Email: aliceEmail, RevokedBefore: at, Reason: events.ReasonAdmin}))
	h.n.publish(t, events.New("idp-a", at, "c", "", events.UserLocked{UserID: "someone-else", Email: "x@example.com", Reason: "deprovisioned"}))
	live := h.mustLogin(newBrowser(), h.r, "idp-a")
	waitVerify(t, r2, revoked, http.StatusUnauthorized)
	waitVerify(t, r2, live, http.StatusOK)
	waitCaughtUp(t, h.n, r2)
	r2.stop()
	want := dbHash(t, dir)

	// Restart on the same file: state is there before anything is re-read.
	r2 = h.startReplica("r2", func(c *Config) { c.DataDir, c.ExternalURL = dir, ext })
	for name, tok := range map[string]string{"revoked": revoked, "logged out": loggedOut} {
		if got := verify(t, r2, tok, nil).StatusCode; got != http.StatusUnauthorized {
			t.Errorf("after restart, verify(%s session) = %d, want 401", name, got)
		}
	}
	if got := verify(t, r2, live, nil).StatusCode; got != http.StatusOK {
		t.Errorf("after restart, verify(live session) = %d, want 200", got)
	}
	r2.stop()

	// Rebuild from the streams into an empty file with the same consumer names.
	fresh := t.TempDir()
	r3 := h.startReplica("r2", func(c *Config) { c.DataDir, c.ExternalURL = fresh, ext })
	waitCaughtUp(t, h.n, r3)
	r3.stop()
	if got := dbHash(t, fresh); got != want {
		t.Errorf("replayed projection hash = %s, want %s (the live one)", got, want)
	}
}
