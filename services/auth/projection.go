package auth

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/consumer"
)

// Ordering. A session is built from this replica's projection after the login's catch-up barrier,
// and records the IDENTITY cursor it read (sessionClaims.IdentitySeq). Facts about a user are
// ordered against a session by that stream sequence, not by event time: a SCIM change acknowledged
// just before a login carries an event time earlier than the session's issue time, yet when auth
// applies it after the session was built, the session did not see it. So each user record notes the
// sequence at which its snapshot (IdentitySeq) and its latest revocation or lock (RevokedSeq) were
// applied; a snapshot applied after the session shapes its identity, and a revocation or lock
// applied after it invalidates it. Sequences come from the stream, so the projection stays a
// deterministic function of it.

// applyIdentity projects one IDENTITY event into tx: a deterministic function of the event (no
// clock, no randomness). The in-memory mirror and the latency metric are updated after commit.
func (s *server) applyIdentity(_ context.Context, tx *bolt.Tx, m consumer.Msg) error {
	e := m.Event
	var (
		id, email string
		change    func(u *userRecord)
		revoking  bool
	)
	switch p := e.Data.(type) {
	case events.IdPSessionsRevoked, events.IdPSubBindingsReset:
		return s.applyIdPFacts(tx, m)
	case events.SessionRevoked:
		return s.revokeSession(tx, p)
	case events.SubBound:
		id, email = p.UserID, p.Email
		change = func(u *userRecord) { u.Sub, u.SubBoundAt = p.Sub, e.OccurredAt }
	case events.SubReset:
		id, email = p.UserID, p.Email
		change = func(u *userRecord) {
			if e.OccurredAt.After(u.SubResetAt) {
				u.SubResetAt = e.OccurredAt
			}
		}
	case events.IdentityChanged:
		id, email = p.Identity.UserID, p.Identity.Email
		snap := p.Identity
		change = func(u *userRecord) {
			u.Identity = &snap
			u.IdentityAt = e.OccurredAt
			u.IdentitySeq = m.Seq
			if snap.Locked && !u.Locked {
				lockRevokes(u, e.OccurredAt, m.Seq)
			}
			u.Locked = snap.Locked
			if snap.RevokedBefore != nil && snap.RevokedBefore.After(u.RevokedBefore) {
				u.RevokedBefore = *snap.RevokedBefore
				u.RevokedSeq = m.Seq
			}
		}
	case events.SessionsRevoked:
		id, email = p.UserID, p.Email
		change = func(u *userRecord) {
			// One latency observation per revocation: not again when the priority lane (priority.go)
			// already moved revoked_before to this revocation's time.
			if p.RevokedBefore.After(u.RevokedBefore) {
				u.RevokedBefore = p.RevokedBefore
				revoking = true
			}
			// Whatever its revoked_before, a revocation revokes the sessions built before auth
			// applied it (see Ordering above).
			u.RevokedSeq = m.Seq
		}
	case events.UserLocked:
		// Not counted in the revocation-latency histogram: a deprovisioning publishes sessions_revoked
		// and locked from the same cause, and one revocation is one observation.
		id, email = p.UserID, p.Email
		change = func(u *userRecord) {
			lockRevokes(u, e.OccurredAt, m.Seq)
			u.Locked = true
		}
	case events.UserUnlocked:
		id, email = p.UserID, p.Email
		change = func(u *userRecord) { u.Locked = false }
	default:
		return nil // seat_removed and future facts change nothing auth checks
	}
	if id == "" {
		return consumer.Permanent(errMissingUserID)
	}
	u, oldKey, err := userForUpdate(tx, id, e.IdPID)
	if err != nil {
		return err
	}
	if email != "" {
		u.Email = email
	}
	change(&u)
	u.Version = m.Seq
	u.OrderedCommit = max(u.OrderedCommit, e.Commit)
	if err := putUser(tx, u, oldKey); err != nil {
		return err
	}
	if err := s.noteOrdered(tx, e.IdPID, e.Commit); err != nil {
		return err
	}
	occurred := e.OccurredAt
	tx.OnCommit(func() {
		// Counted before the state changes: whoever sees the revocation enforced also sees it counted.
		if revoking {
			s.metrics.revocationLatency.Observe(time.Since(occurred).Seconds())
		}
		s.state.putUser(u, oldKey)
	})
	return nil
}

// revokeSession ends one session, refused after the fact (a login whose sub lost the race for the
// person's binding): recorded like a logout, so it expires out of the set the same way. Either lane
// may carry it (priority.go); recording it twice changes nothing.
func (s *server) revokeSession(tx *bolt.Tx, p events.SessionRevoked) error {
	if p.SessionIDHash == "" {
		return nil
	}
	if err := putLoggedOut(tx, p.SessionIDHash, p.ExpiresAt); err != nil {
		return err
	}
	tx.OnCommit(func() { s.state.putLoggedOut(p.SessionIDHash, p.ExpiresAt) })
	return nil
}

// applyIdPFacts projects the facts about a whole IdP: its deletion revokes every session it authenticated
// up to the event, or built before this replica applied it (as lockRevokes does for a user); a reset
// of its sub bindings voids every binding made at or before the event's time.
func (s *server) applyIdPFacts(tx *bolt.Tx, m consumer.Msg) error {
	e := m.Event
	r, err := getIdPRecord(tx, e.IdPID)
	if err != nil {
		return err
	}
	switch p := e.Data.(type) {
	case events.IdPSessionsRevoked:
		if p.RevokedBefore.After(r.RevokedBefore) {
			r.RevokedBefore = p.RevokedBefore
		}
		r.RevokedSeq = m.Seq
	case events.IdPSubBindingsReset:
		if e.OccurredAt.After(r.SubResetAt) {
			r.SubResetAt = e.OccurredAt
		}
	}
	if err := putIdPRecord(tx, r); err != nil {
		return err
	}
	tx.OnCommit(func() { s.state.putIdP(r) })
	return nil
}

// applyAuth projects the AUTH stream: a LoggedOut from any replica invalidates that session here.
// This is how logout reaches every replica: the same durable, gap-checked path as revocation, so a
// replica that was down catches up from its cursor, and staleness of this stream fails closed too.
func (s *server) applyAuth(_ context.Context, tx *bolt.Tx, m consumer.Msg) error {
	p, ok := m.Event.Data.(events.LoggedOut)
	if !ok || p.SessionIDHash == "" {
		return nil
	}
	if err := putLoggedOut(tx, p.SessionIDHash, p.ExpiresAt); err != nil {
		return err
	}
	pruned, err := pruneLoggedOut(tx, m.Event.OccurredAt, 64)
	if err != nil {
		return err
	}
	tx.OnCommit(func() {
		s.state.putLoggedOut(p.SessionIDHash, p.ExpiresAt)
		s.state.dropLoggedOut(pruned)
	})
	return nil
}

// lockRevokes makes a lock revoke every session issued up to it, or built before auth applied it
// (sequence seq), so lifting the lock later never revives them (docs/design.md §4), even if no
// sessions_revoked event accompanied the lock.
func lockRevokes(u *userRecord, at time.Time, seq uint64) {
	if at.After(u.RevokedBefore) {
		u.RevokedBefore = at
	}
	u.RevokedSeq = seq
}

// userForUpdate reads user id for a change by an event of idp (a user not seen yet starts empty)
// and returns its email-index key as stored, which putUser replaces if the email changes.
func userForUpdate(tx *bolt.Tx, id, idp string) (userRecord, string, error) {
	u, _, err := getUser(tx, id)
	if err != nil {
		return u, "", err
	}
	oldKey := ""
	if u.Email != "" {
		oldKey = emailKey(u.IdP, u.Email)
	}
	u.UserID, u.IdP = id, idp
	return u, oldKey, nil
}
