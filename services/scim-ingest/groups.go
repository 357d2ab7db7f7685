package scimingest

import (
	"net/http"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

func (s *server) noteGroup(info *reqInfo, attrs map[string]any) {
	info.groupName = strAttr(attrs, "displayName")
	info.externalID = strAttr(attrs, "externalId")
}

func (s *server) groupEvent(idp events.IdP, info *reqInfo, gid string, rec *resourceRec, changed []string) events.Event {
	return events.New(idp.ID, rec.Modified, info.requestID, "", events.SCIMGroupUpserted{
		GroupID: gid, DisplayName: strAttr(rec.Attrs, "displayName"), ExternalID: strAttr(rec.Attrs, "externalId"),
		Changed: changed, Created: rec.Version == 1, ResourceVersion: rec.Version, Policy: events.PolicyOf(idp.SCIMConfig),
	})
}

// memberEvents splits a membership delta into events of at most events.MaxMembersPerEvent ids.
func (s *server) memberEvents(idp events.IdP, info *reqInfo, gid string, rec *resourceRec, replace bool, added, removed []string) []events.Event {
	chunks := events.Chunk(gid, strAttr(rec.Attrs, "displayName"), replace, added, removed, rec.Version)
	out := make([]events.Event, len(chunks))
	for i, c := range chunks {
		c.Policy = events.PolicyOf(idp.SCIMConfig)
		out[i] = events.New(idp.ID, rec.Modified, info.requestID, "", c)
	}
	return out
}

// checkMembers refuses member ids that are not users of this IdP: a group of unknown ids would
// publish references no consumer can resolve.
func checkMembers(tx *bolt.Tx, idp string, ids []string) error {
	b := tx.Bucket([]byte(bucketUsers))
	for _, id := range ids {
		if b.Get(key(idp, id)) == nil {
			return errorf(http.StatusBadRequest, scimInvalidValue, "member %q is not a user of this IdP", id)
		}
	}
	return nil
}

func (s *server) checkGroupName(tx *bolt.Tx, idp, gid string, attrs map[string]any) error {
	if other := lookupUnique(tx, bucketGroupName, idp, strAttr(attrs, "displayName")); other != "" && other != gid {
		return errorf(http.StatusConflict, scimUniqueness, "a group with this displayName exists (case-insensitively)")
	}
	return nil
}

func (s *server) createGroup(w http.ResponseWriter, r *http.Request, info *reqInfo) error {
	m, err := decodeJSON(info.body)
	if err != nil {
		return err
	}
	attrs, members, err := s.sc.validateGroup(m, s.cfg.MaxMembersPerRequest)
	if err != nil {
		return err
	}
	s.noteGroup(info, attrs)
	idp, now := info.idp, s.now()
	gid := s.ids.next(now)
	info.resourceID = gid
	rec := &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}
	err = s.commits.Update(r.Context(), func(tx *bolt.Tx) error {
		if err := s.checkGroupName(tx, idp.ID, gid, attrs); err != nil {
			return err
		}
		if err := checkMembers(tx, idp.ID, members); err != nil {
			return err
		}
		if err := putRec(tx, bucketGroups, idp.ID, gid, rec); err != nil {
			return err
		}
		if err := reindex(tx, gid, nil, groupIndexKeys(idp.ID, gid, attrs)); err != nil {
			return err
		}
		for _, uid := range members {
			if err := addMember(tx, idp.ID, gid, uid); err != nil {
				return err
			}
		}
		evs := []events.Event{s.groupEvent(idp, info, gid, rec, allAttrs(attrs))}
		if len(members) > 0 {
			evs = append(evs, s.memberEvents(idp, info, gid, rec, false, members, nil)...)
		}
		evs = append(evs, s.logEvent(r, info, http.StatusCreated, now))
		return appendEvents(tx, now, evs...)
	})
	if err != nil {
		return err
	}
	info.logged = true
	s.m.groups.WithLabelValues(idp.ID).Inc()
	if members == nil {
		members = []string{}
	}
	out := s.render(idp.ID, kindGroup, gid, rec, members)
	w.Header().Set("Location", out["meta"].(map[string]any)["location"].(string))
	w.Header().Set("ETag", etag(rec.Version))
	writeJSON(w, http.StatusCreated, parseProjection(r).apply(out))
	return nil
}

// groupChange is what a PUT or PATCH does to a group: new attributes and a membership change.
type groupChange struct {
	attrs   map[string]any
	replace bool     // members is the full new member list
	members []string // with replace
	added   []string // without replace
	removed []string
}

func (s *server) replaceGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo) error {
	m, err := decodeJSON(info.body)
	if err != nil {
		return err
	}
	attrs, members, err := s.sc.validateGroup(m, s.cfg.MaxMembersPerRequest)
	if err != nil {
		return err
	}
	if members == nil {
		members = []string{} // PUT replaces: no members attribute means no members (RFC 7644 §3.5.1)
	}
	return s.updateGroup(w, r, gid, info, func(*bolt.Tx, *resourceRec) (groupChange, error) {
		return groupChange{attrs: attrs, replace: true, members: members}, nil
	}, http.StatusOK)
}

// updateGroup is the shared body of group PUT and PATCH. Membership is changed key by key; a full
// replacement is turned into the delta against the stored members, so the events carry only what
// changed. Nothing changed: no resource event, same version.
func (s *server) updateGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo,
	mutate func(tx *bolt.Tx, old *resourceRec) (groupChange, error), okStatus int) error {
	idp, now := info.idp, s.now()
	var out *resourceRec
	err := s.commits.Update(r.Context(), func(tx *bolt.Tx) error {
		out = nil
		old, err := getRec(tx, bucketGroups, idp.ID, gid)
		if err != nil {
			return err
		}
		if old == nil {
			return notFound("group", gid)
		}
		if err := checkIfMatch(r, old.Version); err != nil {
			return err
		}
		ch, err := mutate(tx, old)
		if err != nil {
			return err
		}
		s.noteGroup(info, ch.attrs)
		var added, removed []string
		if ch.replace {
			want := make(map[string]bool, len(ch.members))
			for _, id := range ch.members {
				want[id] = true
			}
			for _, id := range children(tx, bucketMembers, idp.ID, gid) {
				if !want[id] {
					removed = append(removed, id)
				}
				delete(want, id)
			}
			for _, id := range ch.members {
				if want[id] {
					added = append(added, id)
				}
			}
		} else {
			for _, id := range dedupe(ch.added) {
				if !isMember(tx, idp.ID, gid, id) {
					added = append(added, id)
				}
			}
			for _, id := range dedupe(ch.removed) {
				if isMember(tx, idp.ID, gid, id) {
					removed = append(removed, id)
				}
			}
		}
		if err := checkMembers(tx, idp.ID, added); err != nil {
			return err
		}
		changed := changedAttrs(old.Attrs, ch.attrs)
		if len(changed) == 0 && len(added) == 0 && len(removed) == 0 {
			out = old
			return appendEvents(tx, now, s.logEvent(r, info, okStatus, now))
		}
		if len(changed) > 0 {
			if err := s.checkGroupName(tx, idp.ID, gid, ch.attrs); err != nil {
				return err
			}
		}
		rec := &resourceRec{Attrs: ch.attrs, Version: old.Version + 1, Created: old.Created, Modified: now}
		if err := putRec(tx, bucketGroups, idp.ID, gid, rec); err != nil {
			return err
		}
		if err := reindex(tx, gid, groupIndexKeys(idp.ID, gid, old.Attrs), groupIndexKeys(idp.ID, gid, ch.attrs)); err != nil {
			return err
		}
		for _, id := range removed {
			if err := removeMember(tx, idp.ID, gid, id); err != nil {
				return err
			}
		}
		for _, id := range added {
			if err := addMember(tx, idp.ID, gid, id); err != nil {
				return err
			}
		}
		var evs []events.Event
		if len(changed) > 0 {
			evs = append(evs, s.groupEvent(idp, info, gid, rec, changed))
		}
		if len(added) > 0 || len(removed) > 0 {
			evs = append(evs, s.memberEvents(idp, info, gid, rec, false, added, removed)...)
		}
		out = rec
		return appendEvents(tx, now, append(evs, s.logEvent(r, info, okStatus, now))...)
	})
	if err != nil {
		return err
	}
	info.logged = true
	w.Header().Set("ETag", etag(out.Version))
	if okStatus == http.StatusNoContent {
		w.WriteHeader(okStatus)
		return nil
	}
	proj := parseProjection(r)
	var members []string
	if proj.wants("members") {
		s.db.View(func(tx *bolt.Tx) error {
			members = children(tx, bucketMembers, idp.ID, gid)
			return nil
		})
		if members == nil {
			members = []string{}
		}
	}
	writeJSON(w, okStatus, proj.apply(s.render(idp.ID, kindGroup, gid, out, members)))
	return nil
}

func (s *server) deleteGroup(w http.ResponseWriter, r *http.Request, gid string, info *reqInfo) error {
	idp, now := info.idp, s.now()
	err := s.commits.Update(r.Context(), func(tx *bolt.Tx) error {
		old, err := getRec(tx, bucketGroups, idp.ID, gid)
		if err != nil {
			return err
		}
		if old == nil {
			return notFound("group", gid)
		}
		if err := checkIfMatch(r, old.Version); err != nil {
			return err
		}
		s.noteGroup(info, old.Attrs)
		for _, uid := range children(tx, bucketMembers, idp.ID, gid) {
			if err := removeMember(tx, idp.ID, gid, uid); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte(bucketGroups)).Delete(key(idp.ID, gid)); err != nil {
			return err
		}
		if err := reindex(tx, gid, groupIndexKeys(idp.ID, gid, old.Attrs), nil); err != nil {
			return err
		}
		ev := events.New(idp.ID, now, info.requestID, "", events.SCIMGroupDeleted{
			GroupID: gid, DisplayName: strAttr(old.Attrs, "displayName"), ExternalID: strAttr(old.Attrs, "externalId"),
			ResourceVersion: old.Version + 1, Policy: events.PolicyOf(idp.SCIMConfig),
		})
		return appendEvents(tx, now, ev, s.logEvent(r, info, http.StatusNoContent, now))
	})
	if err != nil {
		return err
	}
	info.logged = true
	s.m.groups.WithLabelValues(idp.ID).Dec()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
