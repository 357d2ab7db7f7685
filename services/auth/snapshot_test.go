package auth

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// snapshotWorld is a harness whose replicas publish snapshots only when the test says so, and a set
// of people with sessions, logouts, locks and revocations to compare replicas on.
type snapshotWorld struct {
	*harness
	ext    string
	tokens map[string]string // name → session token
	users  []string          // user ids whose records are compared
}

func newSnapshotWorld(t *testing.T) *snapshotWorld {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.Snapshots = SnapshotsRestoreOnly }})
	return &snapshotWorld{harness: h, ext: h.r.srv.cfg.ExternalURL, tokens: map[string]string{}}
}

func personAt(i int) (id, email string) {
	email = fmt.Sprintf("p%d@example.com", i)
	return events.UserID("idp-a", email), email
}

// batch publishes identity changes for people from..to-1 and, for some, a lock or a priority-lane
// revocation, so every stream auth consumes has events.
func (w *snapshotWorld) batch(t *testing.T, from, to int, commit uint64) {
	at := w.clock.Now()
	for i := from; i < to; i++ {
		id, email := personAt(i)
		w.users = append(w.users, id)
		w.n.publish(t, withCommit(identityEvent("idp-a", at, events.Identity{UserID: id, Email: email, Status: events.StatusActive,
			Groups: []events.Group{{ID: "g" + strconv.Itoa(i%3), Name: "G"}}}), commit+uint64(i)))
		switch i % 4 {
		case 1:
			w.n.publish(t, withCommit(events.New("idp-a", at, "c", "", events.UserLocked{UserID: id, Email: email, Reason: "deprovisioned"}), commit+uint64(i)))
		case 2:
			w.n.publishBatch(t, []events.Event{withCommit(events.New("idp-a", at, "c", "", events.SessionsRevoked{UserID: id, Email: email, RevokedBefore: at, Reason: events.ReasonAdmin}), commit+uint64(i))}, true)
		}
	}
}

// logins adds a live session, a logged-out one and (when revoke is set) a revoked one of alice.
func (w *snapshotWorld) logins(t *testing.T, tag string, revoke bool) {
	if revoke {
		w.tokens[tag+" revoked"] = w.mustLogin(newBrowser(), w.r, "idp-a")
		at := w.clock.Now()
		uid := events.UserID("idp-a", aliceEmail)
		w.n.publish(t, events.New("idp-a", at, "c", "", events.SessionsRevoked{UserID: uid, Email: aliceEmail, RevokedBefore: at, Reason: events.ReasonAdmin}))
		waitVerify(t, w.r, w.tokens[tag+" revoked"], http.StatusUnauthorized)
	}
	b := newBrowser()
	w.tokens[tag+" logged out"] = w.mustLogin(b, w.r, "idp-a")
	if resp, _ := b.get(t, w.r.url+"/logout"); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout = %d", resp.StatusCode)
	}
	w.tokens[tag+" live"] = w.mustLogin(newBrowser(), w.r, "idp-a")
}

// decisions are what a replica answers: /verify per session, and the record of every user.
type decisions struct {
	Verify map[string]int
	Users  map[string]userRecord
}

func (w *snapshotWorld) decisions(t *testing.T, r *replica) decisions {
	d := decisions{Verify: map[string]int{}, Users: map[string]userRecord{}}
	for name, tok := range w.tokens {
		d.Verify[name] = verify(t, r, tok, nil).StatusCode
	}
	for _, id := range w.users {
		u, _ := r.srv.state.user(id)
		d.Users[id] = u
	}
	return d
}

// fullReplay starts a replica that replays the streams from their start (snapshots off), and
// returns its decisions and the canonical hash of its file.
func (w *snapshotWorld) fullReplay(t *testing.T) (decisions, string) {
	dir := t.TempDir()
	r := w.startReplica("full", func(c *Config) { c.DataDir, c.ExternalURL, c.Snapshots = dir, w.ext, SnapshotsOff })
	waitCaughtUp(t, w.n, r)
	d := w.decisions(t, r)
	r.stop()
	return d, dbHash(t, dir)
}

// fresh starts a replica on an empty data directory with snapshots restored.
func (w *snapshotWorld) fresh(t *testing.T, id string) (*replica, string) {
	dir := t.TempDir()
	r := w.startReplica(id, func(c *Config) { c.DataDir, c.ExternalURL, c.Snapshots = dir, w.ext, SnapshotsRestoreOnly })
	waitCaughtUp(t, w.n, r)
	return r, dir
}

func (w *snapshotWorld) store(t *testing.T) jetstream.ObjectStore {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obs, err := w.n.js.ObjectStore(ctx, BucketSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	return obs
}

func (w *snapshotWorld) publishSnapshot(t *testing.T) snapshotInfo {
	t.Helper()
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	if err := w.r.srv.relay.WaitDrained(dctx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, w.n, w.r)
	waitFor(t, "priority lane applied", 20*time.Second, func() error {
		if w.r.srv.prioRn.Cursor() != streamLast(t, w.n, events.StreamIdentityPriority) {
			return errNotYet
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	si, err := w.r.srv.publishSnapshot(ctx)
	if err != nil {
		t.Fatalf("publishSnapshot: %v", err)
	}
	return si
}

// expireHistory gives every stream auth consumes a max_age and waits until it dropped every event,
// then leaves the streams with a max_age of an hour: history gone, as in a deployment whose
// streams keep a max_age.
func (w *snapshotWorld) expireHistory(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	update := func(stream string, maxAge, dups time.Duration) {
		t.Helper()
		st, err := w.n.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxAge, cfg.Duplicates = maxAge, dups
		if _, err := w.n.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("update stream %s: %v", stream, err)
		}
	}
	// Two seconds: long enough for the running replicas to apply an event published late (a login's
	// or an access decision's, from an outbox) before it expires, so they never halt.
	for stream := range consumerStateKeys {
		update(stream, 2*time.Second, time.Second)
	}
	waitFor(t, "streams expired", 30*time.Second, func() error {
		for stream := range consumerStateKeys {
			st, err := w.n.js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			if st.CachedInfo().State.Msgs != 0 {
				return errNotYet
			}
		}
		return nil
	})
	for stream := range consumerStateKeys {
		update(stream, time.Hour, 2*time.Minute)
	}
}

// TestSnapshotRestoreOnTruncatedStreams: with the streams' history gone (max_age dropped it), a
// replica on an empty data directory is refused by the streams alone (its consumer halts: truncated
// under the cursor) but becomes ready from a snapshot plus the streams' tail, and then decides every
// session and holds every user record exactly as a replica that applied the whole history did; its
// file is that replica's, byte for byte in canonical form (snapshot + tail == full replay).
func TestSnapshotRestoreOnTruncatedStreams(t *testing.T) {
	t.Parallel()
	w := newSnapshotWorld(t)
	w.batch(t, 0, 12, 100)
	w.logins(t, "before", true)
	// The reference applies the whole history, before it expires, and stays up for the tail.
	fullDir := t.TempDir()
	full := w.startReplica("full", func(c *Config) { c.DataDir, c.ExternalURL, c.Snapshots = fullDir, w.ext, SnapshotsOff })
	waitCaughtUp(t, w.n, full)

	w.expireHistory(t)
	snap := w.publishSnapshot(t)
	// The tail: changes after the snapshot, on every stream.
	w.batch(t, 12, 20, 200)
	w.batch(t, 0, 3, 300) // people of the snapshot change again
	w.logins(t, "after", true)
	waitCaughtUp(t, w.n, w.r)
	waitCaughtUp(t, w.n, full)
	want := w.decisions(t, full)
	full.stop()
	wantHash := dbHash(t, fullDir)

	plain := w.startReplicaWait("plain", func(c *Config) { c.DataDir, c.ExternalURL, c.Snapshots = t.TempDir(), w.ext, SnapshotsOff }, false)
	waitFor(t, "replay-only replica halts on the truncated stream", 20*time.Second, func() error {
		if plain.srv.identityRn.Halted() == nil {
			return errNotYet
		}
		return nil
	})
	if resp, err := http.Get(plain.url + "/readyz"); err != nil || resp.StatusCode == http.StatusOK {
		t.Errorf("replay-only replica on truncated streams: readyz %v, %v; want not ready", resp, err)
	} else {
		resp.Body.Close()
	}
	plain.stop()

	r, dir := w.fresh(t, "restored")
	if r.srv.restored != snap.name {
		t.Errorf("restored from %q, want %q", r.srv.restored, snap.name)
	}
	if got := metricValue(t, r.reg, "scimflow_auth_snapshot_restores_total", map[string]string{"result": "restored"}); got != 1 {
		t.Errorf("restores{restored} = %v, want 1", got)
	}
	// The replica identity is the data directory's own, never the snapshot producer's: the same lease
	// token would let one take over the other's replica id and durable consumers.
	if r.srv.leaseToken == w.r.srv.leaseToken {
		t.Errorf("restored replica's lease token is the producer's (%s)", r.srv.leaseToken)
	}
	got := w.decisions(t, r)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("restored replica's decisions differ from the full history's (-full +restored):\n%s", diff)
	}
	if got.Verify["after live"] != http.StatusOK || got.Verify["after revoked"] != http.StatusUnauthorized || got.Verify["before logged out"] != http.StatusUnauthorized {
		t.Errorf("decisions %v: want the live session accepted, revoked and logged-out ones refused", got.Verify)
	}
	r.stop()
	if h := dbHash(t, dir); h != wantHash {
		t.Errorf("restored file hash %s, want the full history's %s", h, wantHash)
	}
}

// TestSnapshotRefusedFallsBack: a snapshot whose bytes were altered, one of another format version
// and one that claims sequences the stream never had are each refused (logged, counted by reason);
// the replica restores the older good snapshot instead, and with no good snapshot left it replays
// the streams. Either way it ends equal to a full replay.
func TestSnapshotRefusedFallsBack(t *testing.T) {
	t.Parallel()
	w := newSnapshotWorld(t)
	w.batch(t, 0, 8, 100)
	w.logins(t, "one", true)
	older := w.publishSnapshot(t)
	w.batch(t, 8, 14, 200)
	w.logins(t, "two", false)
	newer := w.publishSnapshot(t)
	want, wantHash := w.fullReplay(t)

	obs := w.store(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	good, err := obs.GetBytes(ctx, newer.name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(ctx, newer.name)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, data []byte, mut func(md map[string]string)) {
		t.Helper()
		md := map[string]string{}
		for k, v := range info.Metadata {
			md[k] = v
		}
		if mut != nil {
			mut(md)
		}
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Metadata: md}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	// The newest good snapshot's bytes flipped (same name, same metadata).
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	put(newer.name, flipped, nil)
	later := newer.created.Add(time.Second).Format(time.RFC3339Nano)
	put("zz-format", good, func(md map[string]string) { md[metaFormat] = "99"; md[metaCreated] = later })
	beyond := streamLast(t, w.n, events.StreamIdentity) + 100
	put("zz-beyond", good, func(md map[string]string) { md[metaSeq+events.StreamIdentity] = strconv.FormatUint(beyond, 10) })

	r, dir := w.fresh(t, "r3")
	if r.srv.restored != older.name {
		t.Errorf("restored from %q, want the older good snapshot %q", r.srv.restored, older.name)
	}
	for _, reason := range []string{"refused_checksum", "refused_version", "refused_sequence"} {
		if got := metricValue(t, r.reg, "scimflow_auth_snapshot_restores_total", map[string]string{"result": reason}); got != 1 {
			t.Errorf("restores{%s} = %v, want 1", reason, got)
		}
	}
	if diff := cmp.Diff(want, w.decisions(t, r)); diff != "" {
		t.Errorf("decisions differ from the full replay's (-replay +restored):\n%s", diff)
	}
	r.stop()
	if h := dbHash(t, dir); h != wantHash {
		t.Errorf("restored file hash %s, want the full replay's %s", h, wantHash)
	}

	// Without a good snapshot the replica replays the streams.
	if err := obs.Delete(ctx, older.name); err != nil {
		t.Fatal(err)
	}
	r, dir = w.fresh(t, "r4")
	if r.srv.restored != "" {
		t.Errorf("restored from %q, want a replay from the streams", r.srv.restored)
	}
	if got := metricValue(t, r.reg, "scimflow_auth_snapshot_restores_total", map[string]string{"result": "replay"}); got != 1 {
		t.Errorf("restores{replay} = %v, want 1", got)
	}
	r.stop()
	if h := dbHash(t, dir); h != wantHash {
		t.Errorf("replayed file hash %s, want %s", h, wantHash)
	}
}

// TestSnapshotsPublishedAndPruned: a replica with snapshots on publishes on its own once the newest
// snapshot is older than snapshot_interval and it has applied more, and the bucket keeps only the
// newest snapshot_keep.
func TestSnapshotsPublishedAndPruned(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) {
		c.Snapshots, c.SnapshotInterval, c.SnapshotKeep = SnapshotsOn, 1, 2 // 1ns: due as soon as the replica is ahead
	}})
	w := &snapshotWorld{harness: h}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 4 {
		w.batch(t, i, i+1, uint64(10*i))
		last := streamLast(t, h.n, events.StreamIdentity)
		waitFor(t, "a snapshot covering the stream's end", 30*time.Second, func() error {
			obs, err := h.n.js.ObjectStore(ctx, BucketSnapshots)
			if err != nil {
				return err
			}
			list, err := listSnapshots(ctx, obs)
			if err != nil || len(list) == 0 || list[0].seqs[events.StreamIdentity] != last {
				return errNotYet
			}
			return nil
		})
	}
	// Pruning follows each publish; once the last one's is done the bucket holds the newest two.
	last := streamLast(t, h.n, events.StreamIdentity)
	waitFor(t, "bucket pruned to snapshot_keep = 2", 30*time.Second, func() error {
		list, err := listSnapshots(ctx, w.store(t))
		if err != nil {
			return err
		}
		if len(list) != 2 || list[0].seqs[events.StreamIdentity] != last {
			return fmt.Errorf("%d snapshots", len(list))
		}
		return nil
	})
	if got := metricValue(t, h.r.reg, "scimflow_auth_snapshots_published_total", map[string]string{"result": "ok"}); got < 4 {
		t.Errorf("published{ok} = %v, want at least 4", got)
	}
}

func TestSnapshotConfigValidation(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.Snapshots = "sometimes"
	c.SnapshotKeep = -1
	err := c.Validate()
	for _, want := range []string{"auth.snapshots", "snapshot_keep"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("Validate() = %v, want an error naming %s", err, want)
		}
	}
}
