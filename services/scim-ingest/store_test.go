package scimingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/outbox"
)

// The store's tests call it directly, without HTTP: a real bbolt file, a running committer, and the
// outbox read back as the relay would publish it.

func newTestStore(t *testing.T) *store {
	t.Helper()
	db, err := boltdb.Open(filepath.Join(t.TempDir(), "scim-ingest.db"), append([]string{outbox.Bucket}, allBuckets...)...)
	if err != nil {
		t.Fatal(err)
	}
	c := newCommitter(db, 16, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	return newStore(db, c, time.Now)
}

var testIdP = events.IdP{ID: "idpA", SCIMConfig: events.SCIMConfig{Enabled: true}}

func wr(idp events.IdP) writeReq { return writeReq{idp: idp, requestID: "req"} }

// outboxEvents returns every event in the outbox, in append order.
func outboxEvents(t *testing.T, st *store) []events.Event {
	t.Helper()
	var out []events.Event
	err := st.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(outbox.Bucket)).ForEach(func(_, v []byte) error {
			var rec struct {
				Subject string          `json:"subject"`
				Data    json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			e, err := events.Decode(rec.Subject, rec.Data)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantStatus(t *testing.T, err error, status int, scimType string) {
	t.Helper()
	var fe *fault.Error
	if !errors.As(err, &fe) || fe.Kind.Status() != status || fe.Code != scimType {
		t.Fatalf("err = %v, want %d %s", err, status, scimType)
	}
}

func mustCreateUser(t *testing.T, st *store, idp events.IdP, userName string) string {
	t.Helper()
	uid, _, err := st.CreateUser(context.Background(), wr(idp), map[string]any{"userName": userName})
	if err != nil {
		t.Fatalf("CreateUser(%q) = %v", userName, err)
	}
	return uid
}

func TestStoreUserLifecycle(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	ctx := context.Background()
	var logged []string
	w := wr(testIdP)
	w.log = func(id string, attrs map[string]any) events.Event {
		logged = append(logged, strAttr(attrs, "userName"))
		return events.New(testIdP.ID, time.Now(), "req", "", events.SCIMLog{RequestID: "req", HTTPStatus: 201})
	}
	uid, rec, err := st.CreateUser(ctx, w, map[string]any{"userName": "Lena@x.test", "active": true})
	if err != nil || rec.Version != 1 {
		t.Fatalf("CreateUser = %v, %v", rec, err)
	}
	_, _, err = st.CreateUser(ctx, wr(testIdP), map[string]any{"userName": "lena@X.TEST"})
	wantStatus(t, err, http.StatusConflict, scimUniqueness)
	// Another IdP may use the same userName.
	mustCreateUser(t, st, events.IdP{ID: "idpB"}, "lena@x.test")

	// If-Match that names another version: 412, nothing written.
	stale := wr(testIdP)
	stale.ifMatch = `W/"7"`
	_, err = st.UpdateUser(ctx, stale, uid, func(u *User) error { u.Attrs["active"] = false; return nil })
	wantStatus(t, err, http.StatusPreconditionFailed, "")

	// A change of nothing keeps the version and publishes no user event.
	rec, err = st.UpdateUser(ctx, wr(testIdP), uid, func(u *User) error { return nil })
	if err != nil || rec.Version != 1 {
		t.Fatalf("UpdateUser(no change) = %v, %v; want version 1", rec, err)
	}
	rec, err = st.UpdateUser(ctx, wr(testIdP), uid, func(u *User) error { u.Attrs["active"] = false; return nil })
	if err != nil || rec.Version != 2 {
		t.Fatalf("UpdateUser(active=false) = %v, %v; want version 2", rec, err)
	}
	if err := st.DeleteUser(ctx, wr(testIdP), uid); err != nil {
		t.Fatal(err)
	}
	err = st.DeleteUser(ctx, wr(testIdP), uid)
	wantStatus(t, err, http.StatusNotFound, "")
	// The userName is free again.
	mustCreateUser(t, st, testIdP, "LENA@x.test")

	got := eventTypes(outboxEvents(t, st))
	want := []string{events.TypeSCIMUserUpserted, events.TypeSCIMLog, events.TypeSCIMUserUpserted,
		events.TypeSCIMUserUpserted, events.TypeSCIMUserDeleted, events.TypeSCIMUserUpserted}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Lena@x.test"}, logged); diff != "" {
		t.Errorf("log records (-want +got):\n%s", diff)
	}
	evs := outboxEvents(t, st)
	if up := evs[3].Data.(events.SCIMUserUpserted); up.Active || up.ResourceVersion != 2 || !slices.Equal(up.Changed, []string{"active"}) {
		t.Errorf("update event = %+v, want inactive, version 2, changed [active]", up)
	}
}

func TestStoreGroupMembership(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	ctx := context.Background()
	u1, u2, u3 := mustCreateUser(t, st, testIdP, "u1"), mustCreateUser(t, st, testIdP, "u2"), mustCreateUser(t, st, testIdP, "u3")
	other := mustCreateUser(t, st, events.IdP{ID: "idpB"}, "u4")

	_, _, err := st.CreateGroup(ctx, wr(testIdP), map[string]any{"displayName": "eng"}, []string{other})
	wantStatus(t, err, http.StatusBadRequest, scimInvalidValue) // another IdP's user is no member
	gid, rec, err := st.CreateGroup(ctx, wr(testIdP), map[string]any{"displayName": "eng"}, []string{u1, u1})
	if err != nil || rec.Version != 1 {
		t.Fatalf("CreateGroup = %v, %v", rec, err)
	}
	_, _, err = st.CreateGroup(ctx, wr(testIdP), map[string]any{"displayName": "ENG"}, nil)
	wantStatus(t, err, http.StatusConflict, scimUniqueness)

	rec, err = st.UpdateGroup(ctx, wr(testIdP), gid, func(g *Group) error {
		g.AddMembers(u2, u1) // u1 is a member already
		g.RemoveMembers(u3)  // u3 is not
		return nil
	})
	if err != nil || rec.Version != 2 {
		t.Fatalf("UpdateGroup(add) = %v, %v", rec, err)
	}
	rec, err = st.ReplaceGroup(ctx, wr(testIdP), gid, map[string]any{"displayName": "Engineering"}, []string{u2, u3})
	if err != nil || rec.Version != 3 {
		t.Fatalf("ReplaceGroup = %v, %v", rec, err)
	}
	if got := st.related(kindGroup, testIdP.ID, gid); !slices.Equal(got, sortedCopy(u2, u3)) {
		t.Errorf("members = %v, want %v", got, sortedCopy(u2, u3))
	}
	// Deleting a member moves the group's version on and names the group in the user's event.
	if err := st.DeleteUser(ctx, wr(testIdP), u2); err != nil {
		t.Fatal(err)
	}
	if _, rel, _ := st.get(kindGroup, testIdP.ID, gid, true); !slices.Equal(rel, []string{u3}) {
		t.Errorf("members after user delete = %v, want [%s]", rel, u3)
	}
	if g, _, _ := st.get(kindGroup, testIdP.ID, gid, false); g.Version != 4 {
		t.Errorf("group version after member delete = %d, want 4", g.Version)
	}
	if err := st.DeleteGroup(ctx, wr(testIdP), gid); err != nil {
		t.Fatal(err)
	}
	if groups := st.related(kindUser, testIdP.ID, u3); groups != nil {
		t.Errorf("u3's groups after group delete = %v, want none", groups)
	}

	var deltas []string
	for _, e := range outboxEvents(t, st) {
		switch p := e.Data.(type) {
		case events.SCIMGroupMembers:
			deltas = append(deltas, "+"+join(p.Added)+" -"+join(p.Removed))
		case events.SCIMUserDeleted:
			deltas = append(deltas, "user deleted from "+join(p.Groups))
		case events.SCIMGroupDeleted:
			deltas = append(deltas, "group deleted")
		}
	}
	want := []string{"+" + u1 + " -", "+" + u2 + " -", "+" + u3 + " -" + u1, "user deleted from " + gid, "group deleted"}
	if diff := cmp.Diff(want, deltas); diff != "" {
		t.Errorf("membership events (-want +got):\n%s", diff)
	}
}

func sortedCopy(ids ...string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func join(ids []string) string { return strings.Join(ids, ",") }

// TestStoreUpdaterRunsOutsideTheWritePath: an updater that takes long (a costly PATCH) does not hold
// the write path; another IdP's create commits while it runs.
func TestStoreUpdaterRunsOutsideTheWritePath(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	ctx := context.Background()
	uid := mustCreateUser(t, st, testIdP, "slow")
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := st.UpdateUser(ctx, wr(testIdP), uid, func(u *User) error {
			close(inside)
			<-release
			u.Attrs["title"] = "done"
			return nil
		})
		done <- err
	}()
	<-inside
	// The updater is blocked: this create can only commit if the updater holds no transaction.
	mustCreateUser(t, st, events.IdP{ID: "idpB"}, "fast")
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStoreStaleSnapshotRecomputes: a change committed while an updater ran makes the store run the
// updater again on the new version, so neither change is lost.
func TestStoreStaleSnapshotRecomputes(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	ctx := context.Background()
	uid := mustCreateUser(t, st, testIdP, "race")
	var calls atomic.Int32
	rec, err := st.UpdateUser(ctx, wr(testIdP), uid, func(u *User) error {
		if calls.Add(1) == 1 {
			if _, err := st.UpdateUser(ctx, wr(testIdP), uid, func(u *User) error { u.Attrs["title"] = "first"; return nil }); err != nil {
				return err
			}
		}
		u.Attrs["nickName"] = "second"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || rec.Version != 3 || rec.Attrs["title"] != "first" || rec.Attrs["nickName"] != "second" {
		t.Errorf("calls %d, record %+v; want 2 calls, version 3 with both changes", calls.Load(), rec)
	}
}

// TestStoreScanBudget: a non-indexed scan stops when its request's context ends and answers 400
// tooMany once it has run longer than its time budget; an indexed equality is not a scan.
func TestStoreScanBudget(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	ctx := context.Background()
	for i := range 2 * scanCheckEvery {
		mustCreateUser(t, st, testIdP, fmt.Sprintf("user%d@x.test", i))
	}
	f, err := parseFilter(`title co "x"`)
	if err != nil {
		t.Fatal(err)
	}
	q := listQuery{kind: kindUser, idp: testIdP.ID, start: 1, count: 10, filter: f, scanLimit: 1 << 20, scanTimeout: time.Hour,
		match: func(string, *resourceRec, []string) bool { return true }}
	if total, _, err := st.list(ctx, q); err != nil || total != 2*scanCheckEvery {
		t.Fatalf("list = %d, %v; want every user", total, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := st.list(cancelled, q); !errors.Is(err, context.Canceled) {
		t.Errorf("list(cancelled) = %v, want context.Canceled", err)
	}
	// A clock that moves a second per reading: the scan is over its one-second budget at its first check.
	var tick atomic.Int64
	st.now = func() time.Time { return time.Unix(tick.Add(1), 0) }
	q.scanTimeout = time.Second
	_, _, err = st.list(ctx, q)
	wantStatus(t, err, http.StatusBadRequest, scimTooMany)
	eq, _ := parseFilter(`userName eq "user3@x.test"`)
	q.filter = eq
	if total, _, err := st.list(ctx, q); err != nil || total != 1 {
		t.Errorf("indexed list = %d, %v; want 1", total, err)
	}
}

// TestStoreMigratesOldIndexes: a file written before layout version 2 (userNames keyed only
// lower-cased, no person index) has both rebuilt when the store opens; where two users share a key
// (possible before the rules existed) the older keeps it and both can still be changed.
func TestStoreMigratesOldIndexes(t *testing.T) {
	t.Parallel()
	st := newTestStore(t)
	now := time.Now()
	old := map[string]map[string]any{
		"01-lena":       {"userName": "lena@x.com", "active": false},
		"02-contractor": {"userName": "contractor-7731", "emails": []any{map[string]any{"value": "LENA@x.com", "primary": true}}},
		"03-tab":        {"userName": "Bob@x.com\t"},
	}
	err := st.db.Update(func(tx *bolt.Tx) error {
		for uid, attrs := range old {
			if err := putRec(tx, bucketUsers, testIdP.ID, uid, &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}); err != nil {
				return err
			}
			// The version 1 layout: lower-cased userName, nothing else.
			if err := tx.Bucket([]byte(bucketUserName)).Put(key(testIdP.ID, strings.ToLower(strAttr(attrs, "userName"))), []byte(uid)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte(bucketMeta)).Delete([]byte(layoutKey))
	})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := migrate(st.db)
	if err != nil || shared != 1 {
		t.Fatalf("migrate = %d, %v; want 1 user sharing a key", shared, err)
	}
	ctx := context.Background()
	_, _, err = st.CreateUser(ctx, wr(testIdP), map[string]any{"userName": "bob@x.com"})
	wantStatus(t, err, http.StatusConflict, scimUniqueness) // "Bob@x.com\t" is keyed as bob@x.com now
	_, _, err = st.CreateUser(ctx, wr(testIdP), map[string]any{"userName": "someone", "emails": []any{map[string]any{"value": "lena@x.com"}}})
	wantStatus(t, err, http.StatusConflict, scimUniqueness)
	// The contractor shares Lena's person from before the rule: it can still be changed (deactivated).
	if _, err := st.UpdateUser(ctx, wr(testIdP), "02-contractor", func(u *User) error { u.Attrs["active"] = false; return nil }); err != nil {
		t.Errorf("UpdateUser(contractor) = %v", err)
	}
	// Deleting the contractor leaves Lena's link in place.
	if err := st.DeleteUser(ctx, wr(testIdP), "02-contractor"); err != nil {
		t.Fatal(err)
	}
	_, _, err = st.CreateUser(ctx, wr(testIdP), map[string]any{"userName": "lena@X.com "})
	wantStatus(t, err, http.StatusConflict, scimUniqueness)
	if shared, err := migrate(st.db); err != nil || shared != 0 {
		t.Errorf("second migrate = %d, %v; want nothing to do", shared, err)
	}
}
