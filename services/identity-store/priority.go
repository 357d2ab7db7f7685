package identitystore

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/consumer"
	"github.com/scimflow/scimflow/internal/outbox"
)

// DurableSCIMPriority reads the SCIM_PRIORITY lane. It is API like the other durable names.
const DurableSCIMPriority = "identitystore-scim-priority"

// priorityIndex offsets the index of the events derived on the priority lane, so their ids never
// equal those the ordered apply of the same SCIM event derives (events.DeriveID(parent, index)).
const priorityIndex = 1 << 20

// The priority lane (docs/architecture.md, "Lanes"). scim-ingest publishes a security fact (a user
// set inactive, a user deleted, members removed from a group in reauth mode) on the SCIM stream as
// usual and a copy on SCIM_PRIORITY. The registry applies every SCIM event once, in SCIM stream
// order, from the SCIM stream only; the copy changes no registry state. It only derives the
// revocation and lock the ordered apply will derive, and publishes them at once on
// IDENTITY_PRIORITY, where auth applies them as a fence that holds until its ordered IDENTITY lane
// has caught up with the fact's commit number. So the registry (and a rebuild from the streams,
// which never reads the priority lanes) is exactly what in-order apply makes of the SCIM stream,
// while auth learns of the security fact without waiting for the backlog in front of it.

// handlePriority is the SCIM_PRIORITY consumer's handler.
func (s *service) handlePriority(_ context.Context, tx *bolt.Tx, m consumer.Msg) error {
	out, err := priorityFacts(tx, m.Event)
	if err != nil || len(out) == 0 {
		return err
	}
	if err := outbox.AppendPriority(tx, s.now(), out...); err != nil {
		return err
	}
	tx.OnCommit(s.relay.Notify)
	return nil
}

// priorityFacts derives the IDENTITY_PRIORITY events of one SCIM_PRIORITY event from the registry's
// current links (SCIM user → registry user). It writes nothing. A fact the ordered apply already
// applied (the registry holds its resource version) derives nothing: the ordered lane published it.
func priorityFacts(tx *bolt.Tx, ev events.Event) ([]events.Event, error) {
	idp := ev.IdPID
	var out []events.Event
	add := func(p events.Payload) {
		out = append(out, events.Derived(ev, priorityIndex+len(out), p))
	}
	lock := func(uid, email, reason string) {
		add(events.SessionsRevoked{UserID: uid, Email: email, RevokedBefore: ev.OccurredAt.UTC(), Reason: reason, Cause: "SCIM request " + ev.CorrelationID + " (priority lane)"})
		add(events.UserLocked{UserID: uid, Email: email, Reason: reason})
	}
	switch d := ev.Data.(type) {
	case events.SCIMUserUpserted:
		if d.Active || !d.Policy.UserDeprovision {
			return nil, nil
		}
		uid, email, done, err := resolveSCIMUser(tx, idp, d.UserID, d.Email, d.ResourceVersion)
		if err != nil || done {
			return nil, err
		}
		lock(uid, email, events.ReasonDeprovisioned)
	case events.SCIMUserDeleted:
		if !d.Policy.UserDeprovision {
			return nil, nil
		}
		uid, email, done, err := resolveSCIMUser(tx, idp, d.UserID, d.Email, d.ResourceVersion)
		if err != nil || done {
			return nil, err
		}
		lock(uid, email, events.ReasonDeprovisioned)
	case events.SCIMGroupMembers:
		if d.Policy.IdentityUpdateBehavior != events.UpdateReauth || len(d.Removed) == 0 {
			return nil, nil
		}
		g, existed, err := getGroup(tx, idp, d.GroupID)
		if err != nil {
			return nil, err
		}
		if existed && (g.Deleted || d.ResourceVersion < g.MembersVersion || d.ResourceVersion == g.MembersVersion && d.Chunk <= g.LastChunk) {
			return nil, nil // applied already
		}
		for _, sid := range d.Removed {
			var ref scimRef
			ok, err := getJSON(tx, bkSCIMUsers, key(idp, sid), &ref)
			if err != nil {
				return nil, err
			}
			if !ok || ref.Deleted || ref.UID == "" {
				continue // not linked to a registry user yet: no session reads this group
			}
			u, err := getUser(tx, ref.UID)
			if err != nil {
				return nil, err
			}
			if u == nil || u.Deprovisioned {
				continue
			}
			// The fence (a lock until the ordered lane caught up) also keeps a login from reading
			// the removed group from a registry that has not applied the removal yet.
			lock(u.ID, u.Email, events.ReasonGroupsChanged)
		}
	}
	return out, nil
}

// resolveSCIMUser returns the registry id and email a fact about SCIM user sid should name, and
// done when the registry already applied resource version v (or the user's deletion).
func resolveSCIMUser(tx *bolt.Tx, idp, sid, email string, v int64) (uid, mail string, done bool, err error) {
	var ref scimRef
	ok, err := getJSON(tx, bkSCIMUsers, key(idp, sid), &ref)
	if err != nil {
		return "", "", false, err
	}
	if ok && (ref.Deleted || ref.Version >= v) {
		return "", "", true, nil
	}
	mail = normEmail(email)
	switch {
	case ok && ref.UID != "":
		uid = ref.UID
	case mail != "":
		uid = lookupEmail(tx, idp, mail)
	}
	if uid == "" {
		if mail == "" {
			return "", "", true, nil
		}
		// Unknown to the registry yet: the id a first login (auth) and the ordered apply would use.
		uid = events.UserID(idp, mail)
	}
	if u, err := getUser(tx, uid); err != nil {
		return "", "", false, err
	} else if u != nil && u.Email != "" {
		mail = u.Email
	}
	return uid, mail, false, nil
}
