package auth

import (
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/consumer"
)

// Priority lane (docs/architecture.md, "Lanes"). identity-store publishes the revocation and lock of
// a security fact on IDENTITY_PRIORITY as soon as scim-ingest committed it, while the same fact's
// ordered events may still sit behind a backlog in the IDENTITY stream — behind older snapshots of
// the same user that say "not locked". So a priority lock is not applied as a lock but as a fence:
// FenceCommit, the highest commit number of the priority locks of the user. The fence holds (the
// user counts as locked) until the IDENTITY stream has caught up with it:
//
//	fenced ⇔ FenceCommit > OrderedCommit  (no IDENTITY event of this user from that commit on yet)
//	        ∧ FenceCommit ≥ mark(idp)     (no IDENTITY event of the IdP from a later commit yet)
//
// Every IDENTITY event caused by a SCIM write carries its commit number; identity-store applies
// SCIM writes in commit order and publishes in that order, so once the IDENTITY stream delivered an
// event from a commit at or after the fence's for the user (or after it for the IdP), the ordered
// state already contains the fact, and a later reactivation, in turn, is honoured. An old snapshot
// applied after the priority lock has a lower commit number and cannot lift it.
//
// Every field involved only grows (maxima), so the result does not depend on how the two lanes
// interleave on a replica: every replica, whatever it applied first, ends in the same state.
// revoked_before moves to the fact's time exactly as the ordered revocation will move it.

// fenced reports whether a priority lock holds u (mark: u's IdP's commit mark).
func fenced(u *userRecord, mark uint64) bool {
	return u.FenceCommit > u.OrderedCommit && u.FenceCommit >= mark
}

// applyPriority projects one IDENTITY_PRIORITY event: a revocation (of a user, or an admin's of a
// whole IdP) moves revoked_before, a lock raises the fence, a single session's revocation (a login
// with another OIDC sub than the bound one: a possible account hijack) ends that session exactly as
// its ordered copy will. Nothing else is read from this lane.
func (s *server) applyPriority(_ context.Context, tx *bolt.Tx, m consumer.Msg) error {
	e := m.Event
	var id, email string
	var revoking bool
	var change func(u *userRecord)
	switch p := e.Data.(type) {
	case events.SessionRevoked:
		return s.revokeSession(tx, p)
	case events.SessionsRevoked:
		id, email = p.UserID, p.Email
		change = func(u *userRecord) {
			// One latency observation per revocation: by whichever lane moves revoked_before first.
			if p.RevokedBefore.After(u.RevokedBefore) {
				u.RevokedBefore = p.RevokedBefore
				revoking = true
			}
		}
	case events.IdPSessionsRevoked:
		// An admin's revocation of a whole IdP: only the time moves here; the ordered copy also
		// records its stream sequence (applyIdPFacts).
		r, err := getIdPRecord(tx, e.IdPID)
		if err != nil || !p.RevokedBefore.After(r.RevokedBefore) {
			return err
		}
		r.RevokedBefore = p.RevokedBefore
		if err := putIdPRecord(tx, r); err != nil {
			return err
		}
		tx.OnCommit(func() { s.state.putIdP(r) })
		return nil
	case events.UserLocked:
		id, email = p.UserID, p.Email
		change = func(u *userRecord) {
			if e.OccurredAt.After(u.RevokedBefore) {
				u.RevokedBefore = e.OccurredAt
			}
			u.FenceCommit = max(u.FenceCommit, e.Commit)
		}
	default:
		return nil
	}
	if id == "" {
		return consumer.Permanent(errMissingUserID)
	}
	u, oldKey, err := userForUpdate(tx, id, e.IdPID)
	if err != nil {
		return err
	}
	if u.Email == "" && email != "" {
		u.Email = email
	}
	change(&u)
	if err := putUser(tx, u, oldKey); err != nil {
		return err
	}
	occurred := e.OccurredAt
	tx.OnCommit(func() {
		// Counted before the state changes: whoever sees the revocation enforced also sees it counted.
		if revoking {
			s.metrics.revocationLatency.Observe(time.Since(occurred).Seconds())
			s.metrics.priorityRevocations.Inc()
		}
		s.state.putUser(u, oldKey)
	})
	return nil
}

// noteOrdered records, for an IDENTITY event with a commit number, that the ordered lane reached it:
// for the user (u.OrderedCommit, by the caller) and for the IdP (the commit mark).
func (s *server) noteOrdered(tx *bolt.Tx, idp string, commit uint64) error {
	if commit == 0 {
		return nil
	}
	b := tx.Bucket([]byte(bucketCommitMarks))
	if v := b.Get([]byte(idp)); len(v) == 8 && binary.BigEndian.Uint64(v) >= commit {
		return nil
	}
	if err := b.Put([]byte(idp), binary.BigEndian.AppendUint64(nil, commit)); err != nil {
		return err
	}
	tx.OnCommit(func() { s.state.putMark(idp, commit) })
	return nil
}
