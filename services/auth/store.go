package auth

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/person"
)

// Buckets of auth's bbolt file. They hold the revocation projection; the outbox and the consumer
// cursors live next to them so that state and cursor commit together.
const (
	bucketUsers        = "users"          // user id → userRecord JSON
	bucketEmails       = "emails"         // idp \x00 lower(email) → user id
	bucketLoggedOut    = "logged_out"     // session id hash → expiry (8 bytes, unix nanos)
	bucketLoggedOutExp = "logged_out_exp" // expiry (8 bytes) ‖ hash → empty; prunes logged_out
	bucketIdPs         = "idps"           // idp id → idpRecord JSON
	bucketCommitMarks  = "commit_marks"   // idp → highest commit number applied from the IDENTITY stream (8 bytes)
)

// userRecord is what auth knows about one registry user. It changes only by applying IDENTITY
// events, in stream order, from their data alone, so every replica holds the same records.
type userRecord struct {
	UserID        string           `json:"user_id"`
	IdP           string           `json:"idp"`
	Email         string           `json:"email"`
	RevokedBefore time.Time        `json:"revoked_before,omitzero"`
	Locked        bool             `json:"locked"`
	Identity      *events.Identity `json:"identity,omitempty"`
	IdentityAt    time.Time        `json:"identity_at,omitzero"` // occurred_at of the snapshot's event
	Version       uint64           `json:"version"`              // stream sequence of the last change
	// IdentitySeq is the stream sequence at which the current snapshot was applied, RevokedSeq that
	// of the latest revocation or lock. A session whose IdentitySeq claim is lower was built before
	// auth applied them: the snapshot is newer than the session and the revocation covers it.
	IdentitySeq uint64 `json:"identity_seq,omitempty"`
	RevokedSeq  uint64 `json:"revoked_seq,omitempty"`
	// Sub is the OIDC sub identity-store bound to this person at the first login it applied
	// (sub_bound), SubBoundAt that login's event time; SubResetAt is the latest admin reset of the
	// binding (sub_reset). The binding holds while SubBoundAt is after every reset, for the person
	// and for the IdP (idpRecord): event times, so every service orders a reset against a binding
	// alike whatever order their streams interleave in.
	Sub        string    `json:"sub,omitempty"`
	SubBoundAt time.Time `json:"sub_bound_at,omitzero"`
	SubResetAt time.Time `json:"sub_reset_at,omitzero"`
	// OrderedCommit is the highest commit number of the IDENTITY events applied to this user,
	// FenceCommit that of the priority-lane locks (see priority.go). Both only grow.
	OrderedCommit uint64 `json:"ordered_commit,omitempty"`
	FenceCommit   uint64 `json:"fence_commit,omitempty"`
}

// idpRecord is what auth knows about a whole IdP from the IDENTITY stream: when its sessions were
// revoked (the IdP was deleted) and when its sub bindings were reset. It is kept by IdP id and never
// deleted, so an IdP created again under the same id (a config seed) does not revive old sessions.
type idpRecord struct {
	IdP           string    `json:"idp"`
	RevokedBefore time.Time `json:"revoked_before,omitzero"`
	RevokedSeq    uint64    `json:"revoked_seq,omitempty"`
	SubResetAt    time.Time `json:"sub_reset_at,omitzero"`
}

// boundSub returns the sub bound to u that still holds against the IdP's resets, or "".
func boundSub(u *userRecord, ir *idpRecord) string {
	if u == nil || u.Sub == "" || !u.SubBoundAt.After(u.SubResetAt) {
		return ""
	}
	if ir != nil && !u.SubBoundAt.After(ir.SubResetAt) {
		return ""
	}
	return u.Sub
}

// revState is what the hot path reads: the projection in the bbolt file, read through a bounded
// cache of user records. Nothing is loaded at start but the logged-out sessions and the per-IdP
// records (few, and checked on every request), so a replica listens at once and holds memory in
// proportion to the people who are active, not to everyone the registry knows.
//
// The cache is written from bbolt OnCommit hooks, so it never shows uncommitted state. A reader that
// missed the cache fills it with what its read transaction saw only when no commit hook ran since it
// looked (gen), so a read racing a commit can never leave a stale record behind — not even after the
// fresh record was evicted again.
type revState struct {
	db       *bolt.DB
	maxCache int

	mu        sync.RWMutex // guards the following
	gen       uint64       // incremented by every commit hook that changes a user
	users     map[string]*userRecord
	loggedOut map[string]time.Time
	idps      map[string]*idpRecord
	marks     map[string]uint64 // idp → highest commit applied from the IDENTITY stream
}

// defaultUserCache bounds the cached user records: ~1 KB each, so about 100 MB at most.
const defaultUserCache = 100_000

func newRevState(db *bolt.DB) *revState {
	return &revState{db: db, maxCache: defaultUserCache, users: map[string]*userRecord{}, loggedOut: map[string]time.Time{},
		idps: map[string]*idpRecord{}, marks: map[string]uint64{}}
}

// locked reports whether u may not log in or hold a session: locked by the registry, or fenced by a
// priority-lane lock the IDENTITY stream has not caught up with.
func (s *revState) locked(u userRecord) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return u.Locked || fenced(&u, s.marks[u.IdP])
}

func (s *revState) putMark(idp string, c uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c > s.marks[idp] {
		s.marks[idp] = c
	}
}

// lookup returns the record of id from the cache, else from the file (then cached), or nil.
func (s *revState) lookup(id string) *userRecord {
	s.mu.RLock()
	u, hit := s.users[id]
	gen := s.gen
	s.mu.RUnlock()
	if hit {
		return u
	}
	var rec *userRecord
	if s.db != nil {
		_ = s.db.View(func(tx *bolt.Tx) error {
			r, ok, err := getUser(tx, id)
			if err == nil && ok {
				rec = &r
			}
			return nil
		})
	}
	if rec == nil {
		return nil // absent records are not cached: they cost one B+tree lookup
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.users[id]; ok {
		return cur // a commit hook put a newer record meanwhile
	}
	if s.gen == gen {
		s.evictLocked()
		s.users[id] = rec
	}
	return rec
}

// evictLocked makes room for one record, dropping arbitrary ones (map order) when the cache is full.
func (s *revState) evictLocked() {
	if len(s.users) < s.maxCache {
		return
	}
	n := len(s.users)/16 + 1
	for k := range s.users {
		delete(s.users, k)
		if n--; n == 0 {
			return
		}
	}
}

func (s *revState) idp(id string) *idpRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idps[id]
}

// boundSub returns the OIDC sub bound to user id (of idp), if a binding holds.
func (s *revState) boundSub(id, idp string) string {
	return boundSub(s.lookup(id), s.idp(idp))
}

func (s *revState) putIdP(r idpRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idps[r.IdP] = &r
}

func emailKey(idp, email string) string {
	return idp + "\x00" + person.NormalizeEmail(email)
}

// user returns a copy of the record of id.
func (s *revState) user(id string) (userRecord, bool) {
	u := s.lookup(id)
	if u == nil {
		return userRecord{}, false
	}
	return *u, true
}

// userIDByEmail returns the registry id of (idp, email), if the projection knows it.
func (s *revState) userIDByEmail(idp, email string) (string, bool) {
	return s.userIDByEmailKey(emailKey(idp, email))
}

func (s *revState) userIDByEmailKey(ekey string) (string, bool) {
	var id string
	if s.db != nil {
		_ = s.db.View(func(tx *bolt.Tx) error {
			id = string(tx.Bucket([]byte(bucketEmails)).Get([]byte(ekey)))
			return nil
		})
	}
	return id, id != ""
}

// check returns why a session issued at issued, built from the projection up to sequence seq (nil:
// unknown, an older token), for user id (session hash h, login email key ekey) is no longer valid,
// or "" if it is. The user is looked up by id and, if the registry maps the session's (idp, email)
// to another id (the id was learnt after the login), by that id too, so a revocation addressed to
// either reaches the session.
//
// The session's IdP (idp) is checked too: a session the IdP authenticated before its deletion was
// applied is revoked, and a session whose OIDC sub (oidcSub; empty in old tokens) is not the sub now
// bound to the person belongs to another account at the IdP.
func (s *revState) check(id, idp, oidcSub, ekey, h string, issued time.Time, seq *uint64) string {
	s.mu.RLock()
	_, out := s.loggedOut[h]
	ir := s.idps[idp]
	mark := s.marks[idp]
	s.mu.RUnlock()
	if out {
		return "logged_out"
	}
	if ir != nil && (!ir.RevokedBefore.IsZero() && !issued.After(ir.RevokedBefore) || seq != nil && ir.RevokedSeq > *seq) {
		return "idp_revoked"
	}
	if why := userCheck(s.lookup(id), ir, mark, oidcSub, issued, seq); why != "" {
		return why
	}
	if other, ok := s.userIDByEmailKey(ekey); ok && other != id {
		return userCheck(s.lookup(other), ir, mark, oidcSub, issued, seq)
	}
	return ""
}

// userCheck applies docs/design.md §4's validity rule to one user record. A session is revoked when it
// was issued up to revoked_before, or when the latest revocation or lock was applied after the
// session was built (RevokedSeq beyond the session's sequence): that session read the state from
// before the revocation, so it existed before it, even if its login came later in wall time than
// the change that caused the revocation (a login racing a SCIM change).
//
// A priority-lane fence counts as a lock (mark: the IdP's commit mark, priority.go).
func userCheck(u *userRecord, ir *idpRecord, mark uint64, oidcSub string, issued time.Time, seq *uint64) string {
	switch {
	case u == nil:
		return ""
	case oidcSub != "" && boundSub(u, ir) != "" && boundSub(u, ir) != oidcSub:
		return "sub_mismatch"
	case u.Locked || fenced(u, mark):
		return "locked"
	case !u.RevokedBefore.IsZero() && !issued.After(u.RevokedBefore):
		return "revoked"
	case seq != nil && u.RevokedSeq > *seq:
		return "revoked"
	}
	return ""
}

// putUser records a committed change of u (the email index lives in the file only).
func (s *revState) putUser(u userRecord, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	if _, ok := s.users[u.UserID]; !ok {
		s.evictLocked()
	}
	s.users[u.UserID] = &u
}

func (s *revState) putLoggedOut(h string, exp time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loggedOut[h] = exp
}

func (s *revState) dropLoggedOut(hs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hs {
		delete(s.loggedOut, h)
	}
}

// load reads the per-IdP records and the logged-out sessions at start; user records are read on
// demand (lookup).
func (s *revState) load(tx *bolt.Tx) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := tx.Bucket([]byte(bucketCommitMarks)).ForEach(func(k, v []byte) error {
		if len(v) == 8 {
			s.marks[string(k)] = binary.BigEndian.Uint64(v)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := tx.Bucket([]byte(bucketIdPs)).ForEach(func(k, v []byte) error {
		var r idpRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("idp %s: %w", k, err)
		}
		s.idps[r.IdP] = &r
		return nil
	}); err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketLoggedOut)).ForEach(func(k, v []byte) error {
		if len(v) == 8 {
			s.loggedOut[string(k)] = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		}
		return nil
	})
}

func getIdPRecord(tx *bolt.Tx, idp string) (idpRecord, error) {
	r := idpRecord{IdP: idp}
	v := tx.Bucket([]byte(bucketIdPs)).Get([]byte(idp))
	if v == nil {
		return r, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("idp %s: %w", idp, err)
	}
	return r, nil
}

func putIdPRecord(tx *bolt.Tx, r idpRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketIdPs)).Put([]byte(r.IdP), v)
}

func getUser(tx *bolt.Tx, id string) (userRecord, bool, error) {
	v := tx.Bucket([]byte(bucketUsers)).Get([]byte(id))
	if v == nil {
		return userRecord{UserID: id}, false, nil
	}
	var u userRecord
	if err := json.Unmarshal(v, &u); err != nil {
		return u, false, fmt.Errorf("user %s: %w", id, err)
	}
	return u, true, nil
}

func putUser(tx *bolt.Tx, u userRecord, oldEmailKey string) error {
	v, err := json.Marshal(u)
	if err != nil {
		return err
	}
	if err := tx.Bucket([]byte(bucketUsers)).Put([]byte(u.UserID), v); err != nil {
		return err
	}
	eb := tx.Bucket([]byte(bucketEmails))
	if oldEmailKey != "" && string(eb.Get([]byte(oldEmailKey))) == u.UserID {
		if err := eb.Delete([]byte(oldEmailKey)); err != nil {
			return err
		}
	}
	if u.Email != "" {
		return eb.Put([]byte(emailKey(u.IdP, u.Email)), []byte(u.UserID))
	}
	return nil
}

func nanos(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
}

// putLoggedOut records a logged-out session in tx.
func putLoggedOut(tx *bolt.Tx, h string, exp time.Time) error {
	if err := tx.Bucket([]byte(bucketLoggedOut)).Put([]byte(h), nanos(exp)); err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketLoggedOutExp)).Put(append(nanos(exp), h...), nil)
}

// pruneLoggedOut deletes up to limit logged-out records that expired before t (an event time, so
// the projection stays a function of the stream) and returns their hashes.
func pruneLoggedOut(tx *bolt.Tx, t time.Time, limit int) ([]string, error) {
	lo, idx := tx.Bucket([]byte(bucketLoggedOut)), tx.Bucket([]byte(bucketLoggedOutExp))
	var keys [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		if len(k) < 8 || int64(binary.BigEndian.Uint64(k[:8])) >= t.UnixNano() {
			break
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	var out []string
	for _, k := range keys {
		h := string(k[8:])
		if err := idx.Delete(k); err != nil {
			return nil, err
		}
		// Only drop the record if it still carries this expiry (a later logout of the same session
		// is impossible, but keep the index exact anyway).
		if v := lo.Get([]byte(h)); len(v) == 8 && string(v) == string(k[:8]) {
			if err := lo.Delete([]byte(h)); err != nil {
				return nil, err
			}
			out = append(out, h)
		}
	}
	return out, nil
}
