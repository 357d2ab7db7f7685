package scimingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
)

// store is scim-ingest's resource store: it owns the bbolt transaction, uniqueness, the indexes,
// group membership and the events a change publishes. The HTTP handlers parse, normalise, call one
// of its methods and render the result; nothing else writes resources.
//
// Updates follow the updater style (UpdateUser, UpdateGroup take a func that changes the resource):
// the updater runs on a snapshot read outside the write transaction, so a costly PATCH never holds
// the write path that every IdP shares; the transaction then checks that the resource is still at
// the snapshot's version and commits, or the update is computed again on the new version. A pure
// membership delta (members added or removed, attributes unchanged) needs no such check: it is
// resolved against the stored keys inside the transaction, so concurrent member PATCHes of one group
// never conflict.
type store struct {
	db      *bolt.DB
	commits *committer
	now     func() time.Time
	ids     *idGen
}

func newStore(db *bolt.DB, commits *committer, now func() time.Time) *store {
	// Times are stored in UTC, as events carry them, so a file rebuilt from the stream (replay.go) is
	// byte for byte the live one.
	utc := func() time.Time { return now().UTC() }
	return &store{db: db, commits: commits, now: utc, ids: &idGen{}}
}

// writeReq says who writes: the IdP (its id and policy go into the events), the request (its id is
// the events' correlation), the If-Match header, and the provisioning-log record that commits with
// the change.
type writeReq struct {
	idp       events.IdP
	requestID string
	ifMatch   string
	// log builds the provisioning-log record of the request from the resource's id and attributes as
	// written (as they were, for a delete). It runs inside the transaction, possibly more than once
	// (see committer), so it must only build the record. Nil records nothing (store tests).
	log func(id string, attrs map[string]any) events.Event
}

func (w writeReq) logRecord(id string, attrs map[string]any) []events.Event {
	if w.log == nil {
		return nil
	}
	return []events.Event{w.log(id, attrs)}
}

// errStale means the resource changed between the snapshot an update was computed from and its
// write transaction; the update is computed again.
var errStale = errors.New("resource changed while the update was computed")

// maxUpdateAttempts bounds how often an update is recomputed after errStale. Every round commits at
// least one competing write, so only more than this many concurrent attribute changes of one
// resource can exhaust it; the client is then told to retry.
const maxUpdateAttempts = 16

func staleError() error {
	return &fault.Error{Kind: fault.Unavailable, Message: "the resource is being changed concurrently; retry", RetryAfter: time.Second}
}

// write runs fn in a write transaction shared with concurrent writers (committer) and appends the
// events fn returns to the outbox in the same transaction. It returns once the transaction is
// durable or rolled back. Every resource change goes through here.
func (st *store) write(ctx context.Context, now time.Time, fn func(tx *bolt.Tx) ([]events.Event, error)) error {
	return st.commits.Update(ctx, func(tx *bolt.Tx) error {
		evs, err := fn(tx)
		if err != nil {
			return err
		}
		return st.appendEvents(tx, now, evs)
	})
}

// submitLogs queues provisioning-log records of requests that changed nothing, without waiting for
// their commit; onErr reports a failure.
func (st *store) submitLogs(evs []events.Event, onErr func(error)) {
	now := st.now()
	st.commits.Submit(func(tx *bolt.Tx) error { return st.appendEvents(tx, now, evs) }, onErr)
}

// snapshot reads a stored resource outside any write transaction; nil if there is none.
func (st *store) snapshot(bucket, idp, id string) (*resourceRec, error) {
	var rec *resourceRec
	err := st.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getRec(tx, bucket, idp, id)
		return err
	})
	return rec, err
}

// ifMatch enforces If-Match (RFC 7644 §3.14) against the stored version: 412 on mismatch.
func ifMatch(header string, version int64) error {
	if header == "" || matchesETag(header, version) {
		return nil
	}
	return fault.E(fault.PreconditionFailed, "resource version is %s", etag(version))
}

// get returns a stored resource and, when related is set, a group's member ids or a user's groups
// (id, displayName pairs, see userGroups).
func (st *store) get(kind, idp, id string, related bool) (*resourceRec, []string, error) {
	var rec *resourceRec
	var rel []string
	err := st.db.View(func(tx *bolt.Tx) error {
		var err error
		if rec, err = getRec(tx, kindBucket(kind), idp, id); err != nil || rec == nil {
			return err
		}
		if related {
			rel = relatedIDs(tx, kind, idp, id)
		}
		return nil
	})
	if err == nil && rec == nil {
		err = notFound(strings.ToLower(kind), id)
	}
	return rec, rel, err
}

// related returns a group's member ids ([] when it has none) or a user's groups.
func (st *store) related(kind, idp, id string) []string {
	var rel []string
	st.db.View(func(tx *bolt.Tx) error { rel = relatedIDs(tx, kind, idp, id); return nil })
	return rel
}

func relatedIDs(tx *bolt.Tx, kind, idp, id string) []string {
	if kind == kindUser {
		return userGroups(tx, idp, id)
	}
	members := children(tx, bucketMembers, idp, id)
	if members == nil {
		members = []string{}
	}
	return members
}

func kindBucket(kind string) string {
	if kind == kindGroup {
		return bucketGroups
	}
	return bucketUsers
}

// User is a user as an updater sees it: Attrs is a copy of the stored attributes that the updater
// replaces or changes in place.
type User struct {
	ID      string
	Version int64
	Attrs   map[string]any
}

// CreateUser stores a new user with validated attributes and returns its id and record.
func (st *store) CreateUser(ctx context.Context, w writeReq, attrs map[string]any) (string, *resourceRec, error) {
	now := st.now()
	uid := st.ids.next(now)
	rec := &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}
	err := st.write(ctx, now, func(tx *bolt.Tx) ([]events.Event, error) {
		if err := checkUserUnique(tx, w.idp.ID, uid, nil, attrs); err != nil {
			return nil, err
		}
		if err := putRec(tx, bucketUsers, w.idp.ID, uid, rec); err != nil {
			return nil, err
		}
		if err := reindex(tx, uid, nil, userIndexKeys(w.idp.ID, uid, attrs)); err != nil {
			return nil, err
		}
		return append([]events.Event{userEvent(w, uid, rec, allAttrs(attrs))}, w.logRecord(uid, attrs)...), nil
	})
	if err != nil {
		return "", nil, err
	}
	return uid, rec, nil
}

// ReplaceUser replaces a user's attributes (PUT).
func (st *store) ReplaceUser(ctx context.Context, w writeReq, uid string, attrs map[string]any) (*resourceRec, error) {
	return st.UpdateUser(ctx, w, uid, func(u *User) error { u.Attrs = attrs; return nil })
}

// UpdateUser applies fn to the stored user and commits the result. A change of nothing commits no
// resource event and keeps the version (only the log record is written).
func (st *store) UpdateUser(ctx context.Context, w writeReq, uid string, fn func(*User) error) (*resourceRec, error) {
	idp := w.idp.ID
	for attempt := 1; ; attempt++ {
		old, err := st.snapshot(bucketUsers, idp, uid)
		if err != nil {
			return nil, err
		}
		if old == nil {
			return nil, notFound("user", uid)
		}
		if err := ifMatch(w.ifMatch, old.Version); err != nil {
			return nil, err
		}
		u := &User{ID: uid, Version: old.Version, Attrs: copyAttrs(old.Attrs)}
		if err := fn(u); err != nil {
			return nil, err
		}
		attrs := u.Attrs
		if strings.TrimSpace(strAttr(attrs, "userName")) == "" {
			return nil, fault.Coded(fault.Invalid, scimInvalidValue, "userName is required")
		}
		changed := changedAttrs(old.Attrs, attrs)
		now := st.now()
		var out *resourceRec
		err = st.write(ctx, now, func(tx *bolt.Tx) ([]events.Event, error) {
			out = nil
			cur, err := getRec(tx, bucketUsers, idp, uid)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				return nil, notFound("user", uid)
			}
			if cur.Version != old.Version {
				return nil, errStale
			}
			if len(changed) == 0 {
				out = cur
				return w.logRecord(uid, attrs), nil
			}
			if err := checkUserUnique(tx, idp, uid, cur.Attrs, attrs); err != nil {
				return nil, err
			}
			rec := &resourceRec{Attrs: attrs, Version: cur.Version + 1, Created: cur.Created, Modified: now}
			if err := putRec(tx, bucketUsers, idp, uid, rec); err != nil {
				return nil, err
			}
			if err := reindex(tx, uid, userIndexKeys(idp, uid, cur.Attrs), userIndexKeys(idp, uid, attrs)); err != nil {
				return nil, err
			}
			out = rec
			return append([]events.Event{userEvent(w, uid, rec, changed)}, w.logRecord(uid, attrs)...), nil
		})
		if errors.Is(err, errStale) {
			if attempt < maxUpdateAttempts {
				continue
			}
			return nil, staleError()
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// checkUserUnique refuses a userName another user of the IdP has (case-insensitively, ignoring
// surrounding white space), and a user that would link to a person another live resource of the IdP
// links to (its registry email: the userName if it is an email, else the primary, work or first
// email). Without the second rule a new resource naming a deactivated person's email would reopen
// that person's login; once the linked resource is deleted, a new one may link (rehires, IdPs that
// re-create accounts).
//
// old is the stored user for an update (nil for a create): a key the user had before is not checked
// again, so a file written before these rules, which may hold two users with one key, still accepts
// changes to both (reindex leaves the key with its first owner).
func checkUserUnique(tx *bolt.Tx, idp, uid string, old, attrs map[string]any) error {
	u := userNameKey(strAttr(attrs, "userName"))
	if other := lookupUnique(tx, bucketUserName, idp, u); other != "" && other != uid && (old == nil || userNameKey(strAttr(old, "userName")) != u) {
		return fault.Coded(fault.Conflict, scimUniqueness, "userName is already taken (case-insensitively)")
	}
	if p := personKey(attrs); p != "" && (old == nil || personKey(old) != p) {
		if other := lookupUnique(tx, bucketPerson, idp, p); other != "" && other != uid {
			return fault.Coded(fault.Conflict, scimUniqueness,
				"another resource of this IdP (%s) already links to the person with this email; delete it first", other)
		}
	}
	return nil
}

// Group is a group as an updater sees it: Attrs is a copy of the stored attributes (never the
// members); the membership change is said with SetMembers, AddMembers and RemoveMembers.
type Group struct {
	ID      string
	Version int64
	Attrs   map[string]any

	st  *store
	idp string

	replace bool     // set is the full new member list
	set     []string // with replace
	added   []string // without replace
	removed []string
}

// Members reads the stored member ids (the whole list: a cost proportional to the group's size,
// for PUT and for PATCH operations that need the list).
func (g *Group) Members() ([]string, error) {
	var ids []string
	err := g.st.db.View(func(tx *bolt.Tx) error {
		rec, err := getRec(tx, bucketGroups, g.idp, g.ID)
		if err != nil {
			return err
		}
		if rec == nil || rec.Version != g.Version {
			return errStale
		}
		ids = children(tx, bucketMembers, g.idp, g.ID)
		return nil
	})
	return ids, err
}

// SetMembers makes ids the group's full member list.
func (g *Group) SetMembers(ids []string) {
	if ids == nil {
		ids = []string{}
	}
	g.replace, g.set, g.added, g.removed = true, ids, nil, nil
}

// AddMembers adds members; ids already in the group are ignored.
func (g *Group) AddMembers(ids ...string) {
	if g.replace {
		g.set = dedupe(append(g.set, ids...))
		return
	}
	g.added = append(g.added, ids...)
}

// RemoveMembers removes members; ids not in the group are ignored.
func (g *Group) RemoveMembers(ids ...string) {
	if g.replace {
		drop := map[string]bool{}
		for _, id := range ids {
			drop[id] = true
		}
		keep := g.set[:0:0]
		for _, id := range g.set {
			if !drop[id] {
				keep = append(keep, id)
			}
		}
		g.set = keep
		return
	}
	g.removed = append(g.removed, ids...)
}

// CreateGroup stores a new group with validated attributes and members (user ids of the IdP).
func (st *store) CreateGroup(ctx context.Context, w writeReq, attrs map[string]any, members []string) (string, *resourceRec, error) {
	now := st.now()
	gid := st.ids.next(now)
	rec := &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}
	members = dedupe(members)
	err := st.write(ctx, now, func(tx *bolt.Tx) ([]events.Event, error) {
		if err := checkGroupName(tx, w.idp.ID, gid, attrs); err != nil {
			return nil, err
		}
		if err := checkMembers(tx, w.idp.ID, members); err != nil {
			return nil, err
		}
		if err := putRec(tx, bucketGroups, w.idp.ID, gid, rec); err != nil {
			return nil, err
		}
		if err := reindex(tx, gid, nil, groupIndexKeys(w.idp.ID, gid, attrs)); err != nil {
			return nil, err
		}
		for _, uid := range members {
			if err := addMember(tx, w.idp.ID, gid, uid); err != nil {
				return nil, err
			}
		}
		evs := []events.Event{groupEvent(w, gid, rec, allAttrs(attrs))}
		if len(members) > 0 {
			evs = append(evs, memberEvents(w, gid, rec, members, nil)...)
		}
		return append(evs, w.logRecord(gid, attrs)...), nil
	})
	if err != nil {
		return "", nil, err
	}
	return gid, rec, nil
}

// ReplaceGroup replaces a group's attributes and members (PUT).
func (st *store) ReplaceGroup(ctx context.Context, w writeReq, gid string, attrs map[string]any, members []string) (*resourceRec, error) {
	return st.UpdateGroup(ctx, w, gid, func(g *Group) error {
		g.Attrs = attrs
		g.SetMembers(members)
		return nil
	})
}

// UpdateGroup applies fn to the stored group and commits the result. Membership is changed key by
// key; a full replacement becomes the delta against the stored members, so the events carry only
// what changed. Nothing changed: no resource event, same version.
func (st *store) UpdateGroup(ctx context.Context, w writeReq, gid string, fn func(*Group) error) (*resourceRec, error) {
	idp := w.idp.ID
	for attempt := 1; ; attempt++ {
		out, err := st.updateGroupOnce(ctx, w, idp, gid, fn)
		if errors.Is(err, errStale) {
			if attempt < maxUpdateAttempts {
				continue
			}
			return nil, staleError()
		}
		return out, err
	}
}

func (st *store) updateGroupOnce(ctx context.Context, w writeReq, idp, gid string, fn func(*Group) error) (*resourceRec, error) {
	old, err := st.snapshot(bucketGroups, idp, gid)
	if err != nil {
		return nil, err
	}
	if old == nil {
		return nil, notFound("group", gid)
	}
	if err := ifMatch(w.ifMatch, old.Version); err != nil {
		return nil, err
	}
	g := &Group{ID: gid, Version: old.Version, Attrs: copyAttrs(old.Attrs), st: st, idp: idp}
	if err := fn(g); err != nil {
		return nil, err
	}
	changed := changedAttrs(old.Attrs, g.Attrs)
	// A full member list is turned into a delta here, outside the transaction, against the members
	// at the snapshot's version; the transaction then insists on that version.
	var added, removed []string
	if g.replace {
		stored, err := g.Members()
		if err != nil {
			return nil, err
		}
		want := make(map[string]bool, len(g.set))
		for _, id := range g.set {
			want[id] = true
		}
		for _, id := range stored {
			if !want[id] {
				removed = append(removed, id)
			}
			delete(want, id)
		}
		for _, id := range g.set {
			if want[id] {
				added = append(added, id)
				delete(want, id)
			}
		}
	}
	pinned := g.replace || len(changed) > 0
	now := st.now()
	var out *resourceRec
	err = st.write(ctx, now, func(tx *bolt.Tx) ([]events.Event, error) {
		out = nil
		cur, err := getRec(tx, bucketGroups, idp, gid)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			return nil, notFound("group", gid)
		}
		if pinned && cur.Version != old.Version {
			return nil, errStale
		}
		if err := ifMatch(w.ifMatch, cur.Version); err != nil {
			return nil, err
		}
		add, rem := added, removed
		if !g.replace {
			add, rem = nil, nil
			for _, id := range dedupe(g.added) {
				if !isMember(tx, idp, gid, id) {
					add = append(add, id)
				}
			}
			for _, id := range dedupe(g.removed) {
				if isMember(tx, idp, gid, id) {
					rem = append(rem, id)
				}
			}
		}
		if err := checkMembers(tx, idp, add); err != nil {
			return nil, err
		}
		attrs := cur.Attrs
		if len(changed) > 0 {
			attrs = g.Attrs
		}
		if len(changed) == 0 && len(add) == 0 && len(rem) == 0 {
			out = cur
			return w.logRecord(gid, attrs), nil
		}
		if len(changed) > 0 {
			if err := checkGroupName(tx, idp, gid, attrs); err != nil {
				return nil, err
			}
		}
		rec := &resourceRec{Attrs: attrs, Version: cur.Version + 1, Created: cur.Created, Modified: now}
		if err := putRec(tx, bucketGroups, idp, gid, rec); err != nil {
			return nil, err
		}
		if err := reindex(tx, gid, groupIndexKeys(idp, gid, cur.Attrs), groupIndexKeys(idp, gid, attrs)); err != nil {
			return nil, err
		}
		for _, id := range rem {
			if err := removeMember(tx, idp, gid, id); err != nil {
				return nil, err
			}
		}
		for _, id := range add {
			if err := addMember(tx, idp, gid, id); err != nil {
				return nil, err
			}
		}
		var evs []events.Event
		if len(changed) > 0 {
			evs = append(evs, groupEvent(w, gid, rec, changed))
		}
		if len(add) > 0 || len(rem) > 0 {
			evs = append(evs, memberEvents(w, gid, rec, add, rem)...)
		}
		out = rec
		return append(evs, w.logRecord(gid, attrs)...), nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// checkMembers refuses member ids that are not users of this IdP: a group of unknown ids would
// publish references no consumer can resolve.
func checkMembers(tx *bolt.Tx, idp string, ids []string) error {
	b := tx.Bucket([]byte(bucketUsers))
	for _, id := range ids {
		if b.Get(key(idp, id)) == nil {
			return fault.Coded(fault.Invalid, scimInvalidValue, "member %q is not a user of this IdP", id)
		}
	}
	return nil
}

// checkGroupName refuses a displayName another group of the IdP has (case-insensitively).
func checkGroupName(tx *bolt.Tx, idp, gid string, attrs map[string]any) error {
	if other := lookupUnique(tx, bucketGroupName, idp, strAttr(attrs, "displayName")); other != "" && other != gid {
		return fault.Coded(fault.Conflict, scimUniqueness, "a group with this displayName exists (case-insensitively)")
	}
	return nil
}

// DeleteUser deletes a user and removes it from its groups.
func (st *store) DeleteUser(ctx context.Context, w writeReq, uid string) error {
	return st.delete(ctx, w, kindUser, uid)
}

// DeleteGroup deletes a group and its memberships.
func (st *store) DeleteGroup(ctx context.Context, w writeReq, gid string) error {
	return st.delete(ctx, w, kindGroup, gid)
}

// delete is DeleteUser and DeleteGroup: the record, its index entries and its membership keys go in
// one transaction with the deletion event.
func (st *store) delete(ctx context.Context, w writeReq, kind, id string) error {
	idp := w.idp.ID
	now := st.now()
	return st.write(ctx, now, func(tx *bolt.Tx) ([]events.Event, error) {
		bucket := kindBucket(kind)
		old, err := getRec(tx, bucket, idp, id)
		if err != nil {
			return nil, err
		}
		if old == nil {
			return nil, notFound(strings.ToLower(kind), id)
		}
		if err := ifMatch(w.ifMatch, old.Version); err != nil {
			return nil, err
		}
		var ev events.Event
		if kind == kindUser {
			groups, err := leaveGroups(tx, idp, id, now)
			if err != nil {
				return nil, err
			}
			ev = events.New(idp, now, w.requestID, "", events.SCIMUserDeleted{
				UserID: id, UserName: strAttr(old.Attrs, "userName"), ExternalID: strAttr(old.Attrs, "externalId"),
				Email: registryEmail(old.Attrs), Groups: groups, ResourceVersion: old.Version + 1,
				Policy: events.PolicyOf(w.idp.SCIMConfig),
			})
		} else {
			for _, uid := range children(tx, bucketMembers, idp, id) {
				if err := removeMember(tx, idp, id, uid); err != nil {
					return nil, err
				}
			}
			ev = events.New(idp, now, w.requestID, "", events.SCIMGroupDeleted{
				GroupID: id, DisplayName: strAttr(old.Attrs, "displayName"), ExternalID: strAttr(old.Attrs, "externalId"),
				ResourceVersion: old.Version + 1, Policy: events.PolicyOf(w.idp.SCIMConfig),
			})
		}
		if err := tx.Bucket([]byte(bucket)).Delete(key(idp, id)); err != nil {
			return nil, err
		}
		if err := reindex(tx, id, indexKeys(kind, idp, id, old.Attrs), nil); err != nil {
			return nil, err
		}
		return append([]events.Event{ev}, w.logRecord(id, old.Attrs)...), nil
	})
}

// leaveGroups removes a user from every group it is in and returns those groups ([] for none).
// Each group's membership changed, so its version (ETag) moves on; the change itself is told by
// SCIMUserDeleted.Groups, not by a members event.
func leaveGroups(tx *bolt.Tx, idp, uid string, now time.Time) ([]string, error) {
	groups := children(tx, bucketUserGroups, idp, uid)
	for _, gid := range groups {
		if err := removeMember(tx, idp, gid, uid); err != nil {
			return nil, err
		}
		g, err := getRec(tx, bucketGroups, idp, gid)
		if err != nil {
			return nil, err
		}
		if g != nil {
			g.Version++
			g.Modified = now
			if err := putRec(tx, bucketGroups, idp, gid, g); err != nil {
				return nil, err
			}
		}
	}
	if groups == nil {
		groups = []string{}
	}
	return groups, nil
}

func indexKeys(kind, idp, id string, attrs map[string]any) map[string][][]byte {
	if kind == kindUser {
		return userIndexKeys(idp, id, attrs)
	}
	return groupIndexKeys(idp, id, attrs)
}

// copyAttrs returns a deep copy of stored attributes, so that an updater may change its copy in
// place while the snapshot stays what was read.
func copyAttrs(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = copyValue(v)
	}
	return out
}

func copyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return copyAttrs(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyValue(e)
		}
		return out
	}
	return v
}

func userEvent(w writeReq, uid string, rec *resourceRec, changed []string) events.Event {
	attrs := rec.Attrs
	name := events.Name{}
	if n, ok := attrs["name"].(map[string]any); ok {
		name.Formatted, _ = n["formatted"].(string)
		name.GivenName, _ = n["givenName"].(string)
		name.FamilyName, _ = n["familyName"].(string)
		name.MiddleName, _ = n["middleName"].(string)
	}
	active := true
	if a, ok := attrs["active"].(bool); ok {
		active = a
	}
	return events.New(w.idp.ID, rec.Modified, w.requestID, "", events.SCIMUserUpserted{
		UserID: uid, UserName: strAttr(attrs, "userName"), ExternalID: strAttr(attrs, "externalId"),
		Email: registryEmail(attrs), DisplayName: strAttr(attrs, "displayName"), Name: name, Active: active,
		Attributes: attrs, Changed: changed, Created: rec.Version == 1, ResourceVersion: rec.Version,
		Policy: events.PolicyOf(w.idp.SCIMConfig),
	})
}

func groupEvent(w writeReq, gid string, rec *resourceRec, changed []string) events.Event {
	return events.New(w.idp.ID, rec.Modified, w.requestID, "", events.SCIMGroupUpserted{
		GroupID: gid, DisplayName: strAttr(rec.Attrs, "displayName"), ExternalID: strAttr(rec.Attrs, "externalId"),
		Changed: changed, Created: rec.Version == 1, ResourceVersion: rec.Version, Policy: events.PolicyOf(w.idp.SCIMConfig),
	})
}

// memberEvents splits a membership delta into events of at most events.MaxMembersPerEvent ids.
func memberEvents(w writeReq, gid string, rec *resourceRec, added, removed []string) []events.Event {
	chunks := events.Chunk(gid, strAttr(rec.Attrs, "displayName"), false, added, removed, rec.Version)
	out := make([]events.Event, len(chunks))
	for i, c := range chunks {
		c.Policy = events.PolicyOf(w.idp.SCIMConfig)
		out[i] = events.New(w.idp.ID, rec.Modified, w.requestID, "", c)
	}
	return out
}

// matchesETag reports whether a comma-separated If-Match / If-None-Match list names the version
// (weak comparison: W/"3" and "3" are the same version), or is "*".
func matchesETag(list string, version int64) bool {
	want := etag(version)
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || t == want || "W/"+t == want {
			return true
		}
	}
	return false
}

// changedAttrs returns the sorted top-level attribute names whose values differ.
func changedAttrs(old, new map[string]any) []string {
	var out []string
	for k, v := range new {
		if ov, ok := old[k]; !ok || !sameJSON(ov, v) {
			out = append(out, k)
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func allAttrs(attrs map[string]any) []string {
	out := make([]string, 0, len(attrs))
	for k := range attrs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
