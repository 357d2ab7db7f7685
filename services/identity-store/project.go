package identitystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/consumer"
)

// projector applies events to the registry. It is a pure function of the events and the current
// state: no clock, no randomness (docs/design.md §2.3). The only configuration it reads is the SCIM log
// retention, which Replay takes as an option too.
type projector struct {
	logRetention time.Duration
}

// txn is the application of one event: the transaction, the event, and the IDENTITY events it
// produces (ids derived from the event, so a replay mints the same ones).
type txn struct {
	tx      *bolt.Tx
	ev      events.Event
	out     []events.Event
	prio    []events.Event // copies for IDENTITY_PRIORITY (publishPriority)
	discard bool           // replay: nothing is published
	cache   *userCache     // replay: user records decoded once and written once per transaction
}

// userCache holds the users a replay transaction touched; flush writes them before the commit. The
// live consumers do not use it (the runner owns the transaction), so they write through.
type userCache struct {
	users map[string]*user
	dirty map[string]bool
}

func newUserCache() *userCache {
	return &userCache{users: map[string]*user{}, dirty: map[string]bool{}}
}

func (c *userCache) flush(tx *bolt.Tx) error {
	ids := make([]string, 0, len(c.dirty))
	for id := range c.dirty {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := putJSON(tx, bkUsers, []byte(id), c.users[id]); err != nil {
			return err
		}
		if err := putAccessIdent(tx, c.users[id]); err != nil {
			return err
		}
	}
	clear(c.dirty)
	return nil
}

func (t *txn) getUser(uid string) (*user, error) {
	if t.cache == nil || uid == "" {
		return getUser(t.tx, uid)
	}
	if u, ok := t.cache.users[uid]; ok {
		return u, nil
	}
	u, err := getUser(t.tx, uid)
	if u != nil {
		t.cache.users[uid] = u
	}
	return u, err
}

func (t *txn) userExists(uid string) bool {
	if t.cache != nil && t.cache.users[uid] != nil {
		return true
	}
	return t.tx.Bucket([]byte(bkUsers)).Get([]byte(uid)) != nil
}

func (t *txn) storeUser(u *user) error {
	if t.cache == nil {
		if err := putJSON(t.tx, bkUsers, []byte(u.ID), u); err != nil {
			return err
		}
		return putAccessIdent(t.tx, u)
	}
	t.cache.users[u.ID], t.cache.dirty[u.ID] = u, true
	return nil
}

func (t *txn) publish(p events.Payload) {
	if t.discard {
		return
	}
	t.out = append(t.out, events.Derived(t.ev, len(t.out), p))
}

// publishPriority publishes p like publish and a copy on the priority lane (IDENTITY_PRIORITY), so a
// security fact reaches every auth replica ahead of whatever backlog the IDENTITY stream holds. The
// copy's id is derived at priorityIndex + the ordered copy's index, so it never equals an ordered id
// (events.DeriveID), and it is as deterministic as the ordered one. A rebuild (discard) publishes
// neither, and the priority outbox is transport state (DumpSkip).
func (t *txn) publishPriority(p events.Payload) {
	if t.discard {
		return
	}
	i := len(t.out)
	t.out = append(t.out, events.Derived(t.ev, i, p))
	t.prio = append(t.prio, events.Derived(t.ev, priorityIndex+i, p))
}

func (t *txn) at() time.Time { return t.ev.OccurredAt.UTC() }

// errBadEvent marks events the projection refuses for good (termed as poison by the runner).
var errBadEvent = errors.New("invalid event")

func permanent(format string, args ...any) error {
	return consumer.Permanent(fmt.Errorf("%w: "+format, append([]any{errBadEvent}, args...)...))
}

// apply applies ev inside tx and returns the IDENTITY events to publish, in order (out) and the
// copies for the priority lane (prio).
func (p *projector) apply(tx *bolt.Tx, ev events.Event) (out, prio []events.Event, err error) {
	t := &txn{tx: tx, ev: ev}
	out, err = p.applyTo(t)
	return out, t.prio, err
}

// applyDiscard applies ev without building the events it would publish, with a transaction-wide
// user cache the caller flushes (replay).
func (p *projector) applyDiscard(tx *bolt.Tx, ev events.Event, c *userCache) error {
	_, err := p.applyTo(&txn{tx: tx, ev: ev, discard: true, cache: c})
	return err
}

func (p *projector) applyTo(t *txn) ([]events.Event, error) {
	ev := t.ev
	var err error
	switch d := ev.Data.(type) {
	case events.SCIMUserUpserted:
		err = p.scimUserUpserted(t, d)
	case events.SCIMUserDeleted:
		err = p.scimUserDeleted(t, d)
	case events.SCIMGroupUpserted:
		err = p.scimGroupUpserted(t, d)
	case events.SCIMGroupMembers:
		err = p.scimGroupMembers(t, d)
	case events.SCIMGroupDeleted:
		err = p.scimGroupDeleted(t, d)
	case events.SCIMLog:
		err = p.scimLog(t, d)
	case events.LoggedIn:
		err = p.loggedIn(t, d)
	case events.LoggedOut:
		err = p.loggedOut(t, d)
	case events.LoginDenied:
		err = p.loginDenied(t, d)
	case events.SessionsRevoked:
		if isAdminEvent(ev) {
			err = p.adminRevoked(t, d)
		}
	case events.SeatRemoved:
		if isAdminEvent(ev) {
			err = p.adminSeatRemoved(t, d)
		}
	case events.UserUnlocked:
		if isAdminEvent(ev) {
			err = p.adminUnlocked(t, d)
		}
	case events.SubReset:
		if isAdminEvent(ev) {
			err = p.adminSubReset(t, d)
		}
	case events.IdPSessionsRevoked:
		if isAdminEvent(ev) {
			err = p.adminIdP(t, func(st *idpState) {
				if d.RevokedBefore.After(st.SessionsRevokedBefore) {
					st.SessionsRevokedBefore = d.RevokedBefore.UTC()
				}
			})
		}
	case events.IdPSubBindingsReset:
		if isAdminEvent(ev) {
			err = p.adminIdP(t, func(st *idpState) {
				if t.at().After(st.SubResetAt) {
					st.SubResetAt = t.at()
				}
			})
		}
	case events.AccessAppChanged:
		if isAdminEvent(ev) {
			err = p.accessAppChanged(t, d)
		}
	case events.AccessDecided:
		err = p.accessDecided(t, d)
	}
	return t.out, err
}

// isAdminEvent tells the admin API's facts apart from the ones this projection derived: the admin API
// marks them with the envelope's Actor. Facts recorded before the envelope had an actor are
// recognised as they were then (no causation, a correlation id starting with "admin-"), so streams
// written by earlier versions replay the same.
func isAdminEvent(ev events.Event) bool {
	return ev.CausationID == "" && adminOrigin(ev)
}

// adminOrigin reports whether ev is an admin fact or derived from one (Actor is inherited).
func adminOrigin(ev events.Event) bool {
	if ev.Actor != "" {
		return ev.Actor == events.ActorAdmin
	}
	return strings.HasPrefix(ev.CorrelationID, adminCorrelationPrefix)
}

// adminCorrelationPrefix starts the correlation id of admin facts, so the provisioning and access
// logs read "admin-<request id>"; projections decide by Actor, not by this text.
const adminCorrelationPrefix = "admin-"

// change accumulates what an event did to one user, for history and IDENTITY events.
type change struct {
	before *user // nil when the user is new
	u      *user
	notes  []string
	forced bool // write history even if the identity did not change
}

func (t *txn) begin(u *user, isNew bool) *change {
	c := &change{u: u}
	if !isNew {
		c.before = u.clone()
	}
	return c
}

// seen reports whether the event already left its mark in u's history: AUTH and admin facts carry no
// resource version, so a copy republished under another message id is recognised by its event id.
func (t *txn) seen(u *user) bool {
	return t.tx.Bucket([]byte(bkHistory)).Get(historyKey(u.ID, t.at(), t.ev.ID)) != nil
}

func historyKey(uid string, at time.Time, eventID string) []byte {
	k := append(key(uid, ""), timeKey(at)...)
	return append(k, eventID...)
}

func (c *change) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
	c.forced = true
}

// finish writes the user, its indexes, counters and history, and publishes IdentityChanged when the
// registry identity changed.
func (p *projector) finish(t *txn, c *change) error {
	u := c.u
	u.UpdatedAt = t.at()
	if u.CreatedAt.IsZero() {
		u.CreatedAt = t.at()
	}
	u.Groups = sortedGroups(u.Groups)
	if u.Groups == nil {
		u.Groups = []events.Group{}
	}
	// The current SCIM groups, read exactly as a login reads them, whatever changed: every snapshot
	// published carries them, and a membership change in reauth or no_action mode (which leaves
	// Groups alone) still publishes IdentityChanged for them, so auth's next login is not stale.
	var err error
	if u.SCIMGroups, err = currentSCIMGroups(t.tx, u); err != nil {
		return err
	}
	after := u.identity()
	var changes []string
	if c.before == nil {
		changes = []string{"created"}
	} else {
		changes = diffIdentity(c.before.identity(), after)
	}
	if len(changes) == 0 && !c.forced {
		// Still persist (SCIM snapshot, timestamps) without history.
		return p.putUser(t, c)
	}
	u.HistorySeq++
	if err := p.putUser(t, c); err != nil {
		return err
	}
	if len(changes) > 0 {
		t.publish(events.IdentityChanged{Identity: after, Changed: changes})
	}
	h := historyEntry{At: t.at(), Seq: u.HistorySeq, EventID: t.ev.ID, EventType: t.ev.Type, Cause: t.ev.CorrelationID,
		Changes: changes, Notes: c.notes, After: after}
	if changes == nil {
		h.Changes = []string{}
	}
	if c.before != nil {
		b := c.before.identity()
		h.Before = &b
	}
	return putJSON(t.tx, bkHistory, historyKey(u.ID, t.at(), t.ev.ID), h)
}

// putUser stores u, keeps the email index and the per-IdP counters in step.
func (p *projector) putUser(t *txn, c *change) error {
	u := c.u
	if err := t.storeUser(u); err != nil {
		return err
	}
	// Email index: the identity email and the SCIM email both lead to the user.
	want := map[string]bool{}
	if u.Email != "" {
		want[u.Email] = true
	}
	if u.SCIM != nil && u.SCIM.Email != "" && !u.SCIM.Deleted {
		want[u.SCIM.Email] = true
	}
	eb := t.tx.Bucket([]byte(bkEmail))
	if c.before != nil {
		old := []string{c.before.Email}
		if c.before.SCIM != nil {
			old = append(old, c.before.SCIM.Email)
		}
		for _, e := range old {
			if e != "" && !want[e] && string(eb.Get(key(e, u.IdPID))) == u.ID {
				if err := eb.Delete(key(e, u.IdPID)); err != nil {
					return err
				}
			}
		}
	}
	for e := range want {
		if err := eb.Put(key(e, u.IdPID), []byte(u.ID)); err != nil {
			return err
		}
	}
	if err := indexNames(t.tx, c.before, u); err != nil {
		return err
	}
	if err := indexStatus(t.tx, c.before, u); err != nil {
		return err
	}
	// Counters.
	newStatus, newSeat := u.status(), u.seatHeld()
	if c.before == nil {
		if err := t.tx.Bucket([]byte(bkIdPUsers)).Put(key(u.IdPID, u.ID), []byte{}); err != nil {
			return err
		}
		if err := statAdd(t.tx, statUsers(u.IdPID, newStatus), 1); err != nil {
			return err
		}
	} else if old := c.before.status(); old != newStatus {
		if err := statAdd(t.tx, statUsers(u.IdPID, old), -1); err != nil {
			return err
		}
		if err := statAdd(t.tx, statUsers(u.IdPID, newStatus), 1); err != nil {
			return err
		}
		if newStatus == events.StatusInactive && strings.HasPrefix(t.ev.Type, "scim.") {
			if err := statAdd(t.tx, statInactive(u.IdPID), 1); err != nil {
				return err
			}
		}
	}
	if oldLocked := c.before != nil && c.before.Locked; oldLocked != u.Locked {
		d := int64(1)
		if !u.Locked {
			d = -1
		}
		if err := statAdd(t.tx, statLocked(u.IdPID), d); err != nil {
			return err
		}
	}
	oldSeat := c.before != nil && c.before.seatHeld()
	if oldSeat != newSeat {
		d := int64(1)
		if !newSeat {
			d = -1
		}
		if err := statAdd(t.tx, statSeats(u.IdPID), d); err != nil {
			return err
		}
	}
	return nil
}

func diffIdentity(a, b events.Identity) []string {
	var out []string
	if a.Email != b.Email {
		out = append(out, "email")
	}
	if a.Name != b.Name {
		out = append(out, "name")
	}
	if !slices.Equal(a.Groups, b.Groups) {
		out = append(out, "groups")
	}
	if !slices.Equal(a.SCIMGroups, b.SCIMGroups) {
		out = append(out, "scim_groups")
	}
	if !reflect.DeepEqual(a.OIDCFields, b.OIDCFields) {
		out = append(out, "oidc_fields")
	}
	if a.Status != b.Status {
		out = append(out, "status")
	}
	if a.SeatHeld != b.SeatHeld {
		out = append(out, "seat")
	}
	if a.Locked != b.Locked {
		out = append(out, "locked")
	}
	if (a.RevokedBefore == nil) != (b.RevokedBefore == nil) || a.RevokedBefore != nil && !a.RevokedBefore.Equal(*b.RevokedBefore) {
		out = append(out, "revoked_before")
	}
	if a.SCIMUserID != b.SCIMUserID {
		out = append(out, "scim_user_id")
	}
	return out
}

// newUserID returns the default registry id for email, or, if a user already holds it (its email
// changed since), an id derived from it and the SCIM resource id, still deterministic.
func newUserID(t *txn, idp, email, salt string) string {
	id := events.UserID(idp, email)
	for i := 0; t.userExists(id); i++ {
		id = events.UserID(idp, fmt.Sprintf("%s\x00%s\x00%d", email, salt, i))
	}
	return id
}

func (t *txn) revoke(c *change, reason string) error {
	u := c.u
	if t.at().After(u.RevokedBefore) {
		u.RevokedBefore = t.at()
	}
	t.publish(events.SessionsRevoked{UserID: u.ID, Email: u.Email, RevokedBefore: t.at(), Reason: reason, Cause: t.cause()})
	c.note("sessions revoked: %s", reason)
	return statAdd(t.tx, statRevocations(u.IdPID, reason), 1)
}

func (t *txn) cause() string {
	switch {
	case adminOrigin(t.ev):
		return "admin API request " + strings.TrimPrefix(t.ev.CorrelationID, adminCorrelationPrefix)
	case strings.HasPrefix(t.ev.Type, "scim."):
		return "SCIM request " + t.ev.CorrelationID
	}
	return t.ev.Type + " " + t.ev.CorrelationID
}

// deprovision applies the third row of the docs/design.md §4 table: status inactive in every mode;
// user_deprovision revokes every session and locks login; seat_deprovision removes the seat.
func (t *txn) deprovision(c *change, pol events.Policy) error {
	u := c.u
	u.Deprovisioned = true
	c.note("deprovisioned by SCIM")
	if pol.UserDeprovision {
		if err := t.revoke(c, events.ReasonDeprovisioned); err != nil {
			return err
		}
		if !u.Locked {
			u.Locked = true
			t.publish(events.UserLocked{UserID: u.ID, Email: u.Email, Reason: events.ReasonDeprovisioned})
		}
	}
	if pol.SeatDeprovision && u.seatHeld() {
		// A login applied before this deprovisioning but stamped after it (auth had not yet seen the
		// lock) must not keep the seat: removal covers every seat taken so far.
		u.SeatRemovedAt = t.at()
		if u.SeatTakenAt.After(u.SeatRemovedAt) {
			u.SeatRemovedAt = u.SeatTakenAt
		}
		t.publish(events.SeatRemoved{UserID: u.ID, Email: u.Email, Reason: events.ReasonDeprovisioned})
		c.note("seat removed: deprovisioned")
	}
	return nil
}

// reactivate applies the fourth row: the lock is lifted; revoked_before is kept, so sessions issued
// before the lock stay invalid forever.
func (t *txn) reactivate(c *change) {
	u := c.u
	u.Deprovisioned = false
	c.note("reactivated by SCIM")
	if u.Locked {
		u.Locked = false
		t.publish(events.UserUnlocked{UserID: u.ID, Email: u.Email, Reason: "reactivated"})
	}
}

func (p *projector) scimUserUpserted(t *txn, d events.SCIMUserUpserted) error {
	idp := t.ev.IdPID
	email := normEmail(d.Email)
	if email == "" {
		return permanent("scim user %s has no email", d.UserID)
	}
	var ref scimRef
	hasRef, err := getJSON(t.tx, bkSCIMUsers, key(idp, d.UserID), &ref)
	if err != nil {
		return err
	}
	if hasRef && (ref.Deleted || d.ResourceVersion <= ref.Version) {
		return nil // stale, duplicate, or after deletion: no resurrection
	}
	var u *user
	if hasRef {
		if u, err = t.getUser(ref.UID); err != nil {
			return err
		}
	}
	if u == nil {
		if u, err = t.getUser(lookupEmail(t.tx, idp, email)); err != nil {
			return err
		}
	}
	isNew := u == nil
	if isNew {
		u = &user{ID: newUserID(t, idp, email, d.UserID), IdPID: idp}
	}
	c := t.begin(u, isNew)
	wasDeprov := u.Deprovisioned
	relinked := u.SCIMUserID != d.UserID
	oldSCIM := u.SCIM
	u.SCIMUserID = d.UserID
	u.SCIM = &scimState{UserID: d.UserID, UserName: d.UserName, ExternalID: d.ExternalID, Email: email,
		DisplayName: d.DisplayName, Name: d.Name, Active: d.Active,
		Version: d.ResourceVersion, Policy: d.Policy, UpdatedAt: t.at()}
	scimGroups, err := userSCIMGroups(t.tx, idp, d.UserID)
	if err != nil {
		return err
	}
	switch {
	case isNew:
		// A user provisioned before their first login: the registry identity is the SCIM one.
		u.Email, u.Name, u.Groups = email, u.SCIM.displayName(), scimGroups
		c.note("provisioned by SCIM")
	case d.Policy.IdentityUpdateBehavior == events.UpdateAutomatic:
		u.Email, u.Name = email, u.SCIM.displayName()
		if relinked {
			u.Groups = scimGroups
		}
		if oldSCIM != nil {
			c.note("SCIM attributes applied (automatic): %s", strings.Join(d.Changed, ","))
		}
	default:
		if !relinked && oldSCIM != nil && len(d.Changed) > 0 && !(len(d.Changed) == 1 && d.Changed[0] == "active") {
			c.note("SCIM attributes changed (%s); identity unchanged until next login", d.Policy.IdentityUpdateBehavior)
		}
	}
	if relinked && !isNew {
		c.note("linked to SCIM user %s", d.UserID)
	}
	switch {
	case !d.Active && !wasDeprov:
		if isNew {
			u.Deprovisioned = true // provisioned inactive: nothing to revoke
		} else if err := t.deprovision(c, d.Policy); err != nil {
			return err
		}
	case d.Active && wasDeprov:
		t.reactivate(c)
	}
	if err := putJSON(t.tx, bkSCIMUsers, key(idp, d.UserID), scimRef{UID: u.ID, Version: d.ResourceVersion}); err != nil {
		return err
	}
	// The full resource is big and only the admin API reads it: kept apart from the user record,
	// which every login decodes.
	if err := putJSON(t.tx, bkSCIMAttrs, []byte(u.ID), d.Attributes); err != nil {
		return err
	}
	return p.finish(t, c)
}

func (p *projector) scimUserDeleted(t *txn, d events.SCIMUserDeleted) error {
	idp := t.ev.IdPID
	var ref scimRef
	hasRef, err := getJSON(t.tx, bkSCIMUsers, key(idp, d.UserID), &ref)
	if err != nil {
		return err
	}
	if hasRef && ref.Deleted {
		return nil
	}
	uid := ref.UID
	if !hasRef && d.Email != "" {
		uid = lookupEmail(t.tx, idp, d.Email)
	}
	if err := putJSON(t.tx, bkSCIMUsers, key(idp, d.UserID), scimRef{UID: uid, Version: max(ref.Version, d.ResourceVersion), Deleted: true}); err != nil {
		return err
	}
	// Memberships go with the user: the listed groups and any other we know of.
	gids := slices.Clone(d.Groups)
	err = prefixScan(t.tx, bkMemberships, key(idp, d.UserID, ""), func(k, _ []byte) error {
		gids = append(gids, lastPart(k))
		return nil
	})
	if err != nil {
		return err
	}
	for _, g := range gids {
		if err := delMember(t.tx, idp, g, d.UserID); err != nil {
			return err
		}
	}
	u, err := t.getUser(uid)
	if err != nil || u == nil {
		return err
	}
	if u.SCIMUserID != d.UserID && u.SCIMUserID != "" {
		return nil // the user was re-linked to a newer SCIM resource
	}
	c := t.begin(u, false)
	if u.SCIM != nil {
		u.SCIM.Deleted, u.SCIM.Active, u.SCIM.Version, u.SCIM.Policy, u.SCIM.UpdatedAt = true, false, d.ResourceVersion, d.Policy, t.at()
	}
	c.note("SCIM user deleted")
	if d.Policy.IdentityUpdateBehavior == events.UpdateAutomatic {
		u.Groups = nil
	}
	if !u.Deprovisioned {
		if err := t.deprovision(c, d.Policy); err != nil {
			return err
		}
	}
	return p.finish(t, c)
}

func getGroup(tx *bolt.Tx, idp, gid string) (*group, bool, error) {
	g := &group{ID: gid, LastChunk: -1}
	ok, err := getJSON(tx, bkGroups, key(idp, gid), g)
	return g, ok, err
}

func addMember(tx *bolt.Tx, idp, gid, uid string) error {
	if err := tx.Bucket([]byte(bkMembers)).Put(key(idp, gid, uid), []byte{}); err != nil {
		return err
	}
	return tx.Bucket([]byte(bkMemberships)).Put(key(idp, uid, gid), []byte{})
}

func delMember(tx *bolt.Tx, idp, gid, uid string) error {
	if err := tx.Bucket([]byte(bkMembers)).Delete(key(idp, gid, uid)); err != nil {
		return err
	}
	return tx.Bucket([]byte(bkMemberships)).Delete(key(idp, uid, gid))
}

func isMember(tx *bolt.Tx, idp, gid, uid string) bool {
	return tx.Bucket([]byte(bkMembers)).Get(key(idp, gid, uid)) != nil
}

func members(tx *bolt.Tx, b, idp, gid string) ([]string, error) {
	var out []string
	err := prefixScan(tx, b, key(idp, gid, ""), func(k, _ []byte) error {
		out = append(out, lastPart(k))
		return nil
	})
	return out, err
}

// userSCIMGroups returns the SCIM groups of a SCIM user, sorted by name.
func userSCIMGroups(tx *bolt.Tx, idp, scimUID string) ([]events.Group, error) {
	var out []events.Group
	err := prefixScan(tx, bkMemberships, key(idp, scimUID, ""), func(k, _ []byte) error {
		gid := lastPart(k)
		g, ok, err := getGroup(tx, idp, gid)
		if err != nil {
			return err
		}
		if ok && !g.Deleted {
			out = append(out, events.Group{ID: gid, Name: g.Name})
		}
		return nil
	})
	return sortedGroups(out), err
}

// currentSCIMGroups is what a login with SCIM enabled reads as u's groups now: the memberships of its
// SCIM user, none if SCIM never linked it or its SCIM user was deleted.
func currentSCIMGroups(tx *bolt.Tx, u *user) ([]events.Group, error) {
	if u.SCIMUserID == "" || u.SCIM != nil && u.SCIM.Deleted {
		return nil, nil
	}
	return userSCIMGroups(tx, u.IdPID, u.SCIMUserID)
}

func (p *projector) scimGroupUpserted(t *txn, d events.SCIMGroupUpserted) error {
	idp := t.ev.IdPID
	g, existed, err := getGroup(t.tx, idp, d.GroupID)
	if err != nil {
		return err
	}
	if existed && (g.Deleted || d.ResourceVersion <= g.AttrVersion) {
		return nil
	}
	renamed := existed && g.Name != d.DisplayName
	g.Name, g.ExternalID, g.AttrVersion = d.DisplayName, d.ExternalID, d.ResourceVersion
	if err := putJSON(t.tx, bkGroups, key(idp, d.GroupID), g); err != nil {
		return err
	}
	if !renamed {
		return nil
	}
	ms, err := members(t.tx, bkMembers, idp, d.GroupID)
	if err != nil {
		return err
	}
	return p.groupsChanged(t, d.Policy, ms, "group "+d.GroupID+" renamed")
}

func (p *projector) scimGroupMembers(t *txn, d events.SCIMGroupMembers) error {
	idp := t.ev.IdPID
	g, existed, err := getGroup(t.tx, idp, d.GroupID)
	if err != nil {
		return err
	}
	if existed && g.Deleted {
		return nil
	}
	v := d.ResourceVersion
	if v < g.MembersVersion || (v == g.MembersVersion && d.Chunk <= g.LastChunk) {
		return nil // stale or duplicate chunk
	}
	if v > g.MembersVersion {
		g.MembersVersion, g.LastChunk, g.Staging = v, -1, false
	}
	if g.Name == "" {
		g.Name = d.DisplayName
	}
	g.LastChunk = d.Chunk
	var affected []string
	switch {
	case d.Replace && d.Chunks > 1 || g.Staging:
		// A replacement split in chunks: stage the new member set and apply the difference once, at
		// the last chunk, so no member is removed and re-added in between (which would revoke the
		// sessions of users whose groups did not change).
		if d.Replace {
			old, err := members(t.tx, bkStaging, idp, d.GroupID)
			if err != nil {
				return err
			}
			for _, u := range old {
				if err := t.tx.Bucket([]byte(bkStaging)).Delete(key(idp, d.GroupID, u)); err != nil {
					return err
				}
			}
			g.Staging = true
		}
		for _, u := range d.Added {
			if err := t.tx.Bucket([]byte(bkStaging)).Put(key(idp, d.GroupID, u), []byte{}); err != nil {
				return err
			}
		}
		for _, u := range d.Removed {
			if err := t.tx.Bucket([]byte(bkStaging)).Delete(key(idp, d.GroupID, u)); err != nil {
				return err
			}
		}
		if d.Chunk < d.Chunks-1 {
			return putJSON(t.tx, bkGroups, key(idp, d.GroupID), g)
		}
		next, err := members(t.tx, bkStaging, idp, d.GroupID)
		if err != nil {
			return err
		}
		for _, u := range next {
			if err := t.tx.Bucket([]byte(bkStaging)).Delete(key(idp, d.GroupID, u)); err != nil {
				return err
			}
		}
		g.Staging = false
		if affected, err = replaceMembers(t.tx, idp, d.GroupID, next); err != nil {
			return err
		}
	case d.Replace:
		if affected, err = replaceMembers(t.tx, idp, d.GroupID, d.Added); err != nil {
			return err
		}
	default:
		for _, u := range d.Removed {
			if isMember(t.tx, idp, d.GroupID, u) {
				if err := delMember(t.tx, idp, d.GroupID, u); err != nil {
					return err
				}
				affected = append(affected, u)
			}
		}
		for _, u := range d.Added {
			if !isMember(t.tx, idp, d.GroupID, u) {
				if err := addMember(t.tx, idp, d.GroupID, u); err != nil {
					return err
				}
				affected = append(affected, u)
			}
		}
	}
	if err := putJSON(t.tx, bkGroups, key(idp, d.GroupID), g); err != nil {
		return err
	}
	return p.groupsChanged(t, d.Policy, affected, "membership of group "+d.GroupID+" changed")
}

// replaceMembers makes next the member set of the group and returns who was added or removed.
func replaceMembers(tx *bolt.Tx, idp, gid string, next []string) ([]string, error) {
	old, err := members(tx, bkMembers, idp, gid)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, u := range next {
		want[u] = true
	}
	var affected []string
	for _, u := range old {
		if !want[u] {
			if err := delMember(tx, idp, gid, u); err != nil {
				return nil, err
			}
			affected = append(affected, u)
		}
		delete(want, u)
	}
	for u := range want {
		if err := addMember(tx, idp, gid, u); err != nil {
			return nil, err
		}
		affected = append(affected, u)
	}
	return affected, nil
}

func (p *projector) scimGroupDeleted(t *txn, d events.SCIMGroupDeleted) error {
	idp := t.ev.IdPID
	g, existed, err := getGroup(t.tx, idp, d.GroupID)
	if err != nil {
		return err
	}
	if existed && g.Deleted {
		return nil
	}
	if g.Name == "" {
		g.Name = d.DisplayName
	}
	g.Deleted, g.AttrVersion = true, max(g.AttrVersion, d.ResourceVersion)
	ms, err := members(t.tx, bkMembers, idp, d.GroupID)
	if err != nil {
		return err
	}
	for _, u := range ms {
		if err := delMember(t.tx, idp, d.GroupID, u); err != nil {
			return err
		}
	}
	if err := putJSON(t.tx, bkGroups, key(idp, d.GroupID), g); err != nil {
		return err
	}
	return p.groupsChanged(t, d.Policy, ms, "group "+d.GroupID+" deleted")
}

// groupsChanged applies the second row of the docs/design.md §4 table to the users whose SCIM groups
// changed: automatic updates the registry groups now (sessions stay); reauth revokes every session
// (groups are read at the next login); no_action leaves the identity until the next login.
func (p *projector) groupsChanged(t *txn, pol events.Policy, scimUIDs []string, what string) error {
	sort.Strings(scimUIDs)
	scimUIDs = slices.Compact(scimUIDs)
	idp := t.ev.IdPID
	for _, sid := range scimUIDs {
		var ref scimRef
		ok, err := getJSON(t.tx, bkSCIMUsers, key(idp, sid), &ref)
		if err != nil {
			return err
		}
		if !ok || ref.Deleted {
			continue // membership before the user: resolved when the user is provisioned
		}
		u, err := t.getUser(ref.UID)
		if err != nil {
			return err
		}
		if u == nil || u.SCIMUserID != sid {
			continue
		}
		c := t.begin(u, false)
		switch pol.IdentityUpdateBehavior {
		case events.UpdateAutomatic:
			if u.Groups, err = userSCIMGroups(t.tx, idp, sid); err != nil {
				return err
			}
			c.note("%s (automatic)", what)
		case events.UpdateReauth:
			// Every session issued before this change is revoked, whether or not a login has been
			// applied yet: identity-store consumes AUTH and SCIM independently, so a login that
			// happened before the change may be applied after it (its AUTH consumer lagging), and
			// "never logged in" here proves nothing about auth's sessions. revoked_before is the
			// change's event time, so the session of that late login (issued earlier) is revoked
			// and a login after the change is not; a provisioned user simply has no session yet.
			if !u.Deprovisioned {
				if err := t.revoke(c, events.ReasonGroupsChanged); err != nil {
					return err
				}
			}
			c.note("%s (reauth): groups read at next login", what)
		default:
			c.note("%s (%s): identity unchanged until next login", what, pol.IdentityUpdateBehavior)
		}
		if err := p.finish(t, c); err != nil {
			return err
		}
	}
	return nil
}

func (p *projector) scimLog(t *txn, d events.SCIMLog) error {
	row := logRow{ID: t.ev.ID, IdPID: t.ev.IdPID, LoggedAt: t.at(), RequestID: d.RequestID, RequestMethod: d.Method,
		Path: d.Path, ResourceType: d.ResourceType, CFResourceID: d.ResourceID, IdPResourceID: d.ResourceIdPID,
		ResourceUserEmail: normEmail(d.ResourceUserEmail), ResourceGroupName: d.ResourceGroupName, Status: d.Status,
		HTTPStatus: d.HTTPStatus, ErrorDescription: d.ErrorDescription, RequestBody: d.RequestBody}
	k := append(timeKey(t.at()), t.ev.ID...)
	if err := putJSON(t.tx, bkSCIMLog, k, row); err != nil {
		return err
	}
	if err := t.tx.Bucket([]byte(bkSCIMLogLast)).Put([]byte(row.IdPID), k); err != nil {
		return err
	}
	// Retention by event time, so a replay prunes exactly what the live store pruned.
	if p.logRetention <= 0 {
		return nil
	}
	bound := timeKey(t.at().Add(-p.logRetention))
	c := t.tx.Bucket([]byte(bkSCIMLog)).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], bound) < 0; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// authUser finds the user of an AUTH event: by email first (auth may only know the default id of a
// new email), then by the registry id auth sent.
func authUser(t *txn, idp, email, uid string) (*user, error) {
	u, err := t.getUser(lookupEmail(t.tx, idp, email))
	if u != nil || err != nil {
		return u, err
	}
	u, err = t.getUser(uid)
	if u != nil && u.IdPID != idp {
		return nil, err
	}
	return u, err
}

func (p *projector) loggedIn(t *txn, d events.LoggedIn) error {
	idp := t.ev.IdPID
	email := normEmail(d.Email)
	if email == "" {
		return permanent("login event without email")
	}
	u, err := authUser(t, idp, email, d.UserID)
	if err != nil {
		return err
	}
	isNew := u == nil
	if !isNew && t.seen(u) {
		return nil
	}
	if isNew {
		uid := d.UserID
		if uid == "" || t.userExists(uid) {
			uid = newUserID(t, idp, email, d.Sub)
		}
		u = &user{ID: uid, IdPID: idp}
	}
	ip, err := getIdPState(t.tx, idp)
	if err != nil {
		return err
	}
	c := t.begin(u, isNew)
	at := t.at()
	// The person is bound to the OIDC sub of the first login applied (docs/security.md, finding 9). A login
	// with another sub that an auth replica let through (it had not yet learnt the binding: a race
	// with the first login, or a replica behind) changes nothing here, and its session is revoked on
	// every replica.
	bound := u.boundSub(ip)
	if d.Sub != "" && bound != "" && d.Sub != bound {
		if d.SessionIDHash != "" {
			// A possible account hijack: the revocation must not wait behind a bulk backlog on IDENTITY.
			t.publishPriority(events.SessionRevoked{UserID: u.ID, Email: u.Email, SessionIDHash: d.SessionIDHash, ExpiresAt: d.ExpiresAt.UTC(),
				Reason: events.ReasonSubMismatch})
		}
		c.note("login refused: OIDC sub %q is not the bound sub; its session is revoked", d.Sub)
		if err := statAdd(t.tx, statRevocations(idp, events.ReasonSubMismatch), 1); err != nil {
			return err
		}
		return p.finish(t, c)
	}
	if d.Sub != "" && bound == "" {
		u.Sub, u.SubBoundAt = d.Sub, at
		t.publish(events.SubBound{UserID: u.ID, Email: email, Sub: d.Sub})
		c.note("OIDC sub %q bound", d.Sub)
	}
	if u.FirstLoginAt.IsZero() {
		u.FirstLoginAt = at
	}
	if at.After(u.LastLoginAt) {
		u.LastLoginAt = at
	}
	heldSeat := u.seatHeld()
	// A locked user's login was let through by an auth replica that had not yet seen the lock: the
	// session is invalid anyway (locked), and it takes no seat.
	if at.After(u.SeatTakenAt) && !u.Locked {
		u.SeatTakenAt = at
	}
	if !heldSeat && u.seatHeld() {
		c.note("seat taken")
	}
	// The registry identity is rebuilt from the ID token claims plus the latest SCIM state.
	u.Email, u.OIDCFields = email, d.OIDCFields
	u.Name = d.Name
	if u.Name == "" {
		u.Name = u.SCIM.displayName()
	}
	// SCIM membership replaces the claim only for a person SCIM knows (docs/design.md §4); events
	// from before this rule carry no claim when SCIM was enabled, so a replay gives what it gave.
	if d.SCIMEnabled && u.scimLinked() {
		if u.Groups, err = currentSCIMGroups(t.tx, u); err != nil {
			return err
		}
	} else {
		u.Groups = nil
		for _, g := range d.Groups {
			u.Groups = append(u.Groups, events.Group{ID: g, Name: g})
		}
	}
	// Record the session and forget the user's expired ones (by event time).
	sb := t.tx.Bucket([]byte(bkSessions))
	var expired [][]byte
	err = prefixScan(t.tx, bkSessions, key(u.ID, ""), func(k, v []byte) error {
		var s session
		if json.Unmarshal(v, &s) == nil && !s.ExpiresAt.After(at) {
			expired = append(expired, slices.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range expired {
		if err := sb.Delete(k); err != nil {
			return err
		}
	}
	if d.SessionIDHash != "" {
		if err := putJSON(t.tx, bkSessions, key(u.ID, d.SessionIDHash), session{IssuedAt: d.IssuedAt.UTC(), ExpiresAt: d.ExpiresAt.UTC(), EventID: t.ev.ID}); err != nil {
			return err
		}
	}
	c.note("logged in")
	return p.finish(t, c)
}

func (p *projector) loggedOut(t *txn, d events.LoggedOut) error {
	u, err := authUser(t, t.ev.IdPID, normEmail(d.Email), d.UserID)
	if err != nil || u == nil || t.seen(u) {
		return err
	}
	if err := t.tx.Bucket([]byte(bkSessions)).Delete(key(u.ID, d.SessionIDHash)); err != nil {
		return err
	}
	c := t.begin(u, false)
	c.note("logged out")
	return p.finish(t, c)
}

func (p *projector) loginDenied(t *txn, d events.LoginDenied) error {
	u, err := authUser(t, t.ev.IdPID, normEmail(d.Email), d.UserID)
	if err != nil || u == nil || t.seen(u) {
		return err
	}
	c := t.begin(u, false)
	c.note("login denied: %s", d.Reason)
	return p.finish(t, c)
}

func (p *projector) adminRevoked(t *txn, d events.SessionsRevoked) error {
	u, err := t.getUser(d.UserID)
	if err != nil || u == nil || u.IdPID != t.ev.IdPID || t.seen(u) {
		return err
	}
	c := t.begin(u, false)
	if d.RevokedBefore.After(u.RevokedBefore) {
		u.RevokedBefore = d.RevokedBefore.UTC()
	}
	c.note("sessions revoked by admin (%s)", d.Reason)
	if err := statAdd(t.tx, statRevocations(u.IdPID, d.Reason), 1); err != nil {
		return err
	}
	return p.finish(t, c)
}

func (p *projector) adminSeatRemoved(t *txn, d events.SeatRemoved) error {
	u, err := t.getUser(d.UserID)
	if err != nil || u == nil || u.IdPID != t.ev.IdPID || t.seen(u) {
		return err
	}
	c := t.begin(u, false)
	if u.seatHeld() {
		u.SeatRemovedAt = t.at()
		c.note("seat removed by admin")
	}
	return p.finish(t, c)
}

// adminUnlocked lifts a lock (POST /api/v1/users/{id}/unlock). revoked_before stays where the lock put
// it, so sessions issued before the lock stay invalid; the SCIM state (deprovisioned, status) is left
// as the IdP last sent it.
func (p *projector) adminUnlocked(t *txn, d events.UserUnlocked) error {
	u, err := t.getUser(d.UserID)
	if err != nil || u == nil || u.IdPID != t.ev.IdPID || t.seen(u) {
		return err
	}
	c := t.begin(u, false)
	if u.Locked {
		u.Locked = false
		c.note("unlocked by admin")
	} else {
		c.note("unlock by admin: not locked")
	}
	return p.finish(t, c)
}

// adminSubReset voids the person's sub binding as of the event (DELETE /api/v1/users/{id}/sub): the
// next login binds its sub afresh.
func (p *projector) adminSubReset(t *txn, d events.SubReset) error {
	u, err := t.getUser(d.UserID)
	if err != nil || u == nil || u.IdPID != t.ev.IdPID || t.seen(u) {
		return err
	}
	c := t.begin(u, false)
	if t.at().After(u.SubResetAt) {
		u.SubResetAt = t.at()
	}
	c.note("OIDC sub binding reset by admin (was %q)", u.Sub)
	return p.finish(t, c)
}

// adminIdP applies an admin fact about a whole IdP to its idpState.
func (p *projector) adminIdP(t *txn, f func(*idpState)) error {
	st, err := getIdPState(t.tx, t.ev.IdPID)
	if err != nil {
		return err
	}
	f(&st)
	return putJSON(t.tx, bkIdPs, []byte(t.ev.IdPID), st)
}
