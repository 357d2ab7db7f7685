package scimingest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
)

// checkIfMatch enforces If-Match (RFC 7644 §3.14) against the stored version: 412 on mismatch.
func checkIfMatch(r *http.Request, version int64) error {
	h := r.Header.Get("If-Match")
	if h == "" || matchesETag(h, version) {
		return nil
	}
	return errorf(http.StatusPreconditionFailed, "", "resource version is %s", etag(version))
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

func (s *server) userEvent(idp events.IdP, info *reqInfo, uid string, rec *resourceRec, changed []string) events.Event {
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
	return events.New(idp.ID, rec.Modified, info.requestID, "", events.SCIMUserUpserted{
		UserID: uid, UserName: strAttr(attrs, "userName"), ExternalID: strAttr(attrs, "externalId"),
		Email: registryEmail(attrs), DisplayName: strAttr(attrs, "displayName"), Name: name, Active: active,
		Attributes: attrs, Changed: changed, Created: rec.Version == 1, ResourceVersion: rec.Version,
		Policy: events.PolicyOf(idp.SCIMConfig),
	})
}

func (s *server) noteUser(info *reqInfo, attrs map[string]any) {
	info.externalID = strAttr(attrs, "externalId")
	info.email = registryEmail(attrs)
}

func (s *server) createUser(w http.ResponseWriter, r *http.Request, info *reqInfo) error {
	m, err := decodeJSON(info.body)
	if err != nil {
		return err
	}
	attrs, err := s.sc.validateUser(m)
	if err != nil {
		return err
	}
	s.noteUser(info, attrs)
	idp, now := info.idp, s.now()
	uid := s.ids.next(now)
	info.resourceID = uid
	rec := &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}
	err = s.commits.Update(r.Context(), func(tx *bolt.Tx) error {
		if other := lookupUnique(tx, bucketUserName, idp.ID, strAttr(attrs, "userName")); other != "" {
			return errorf(http.StatusConflict, scimUniqueness, "userName is already taken (case-insensitively)")
		}
		if err := putRec(tx, bucketUsers, idp.ID, uid, rec); err != nil {
			return err
		}
		if err := reindex(tx, uid, nil, userIndexKeys(idp.ID, uid, attrs)); err != nil {
			return err
		}
		return appendEvents(tx, now, s.userEvent(idp, info, uid, rec, allAttrs(attrs)), s.logEvent(r, info, http.StatusCreated, now))
	})
	if err != nil {
		return err
	}
	info.logged = true
	s.m.users.WithLabelValues(idp.ID).Inc()
	out := s.render(idp.ID, kindUser, uid, rec, nil)
	w.Header().Set("Location", out["meta"].(map[string]any)["location"].(string))
	w.Header().Set("ETag", etag(rec.Version))
	writeJSON(w, http.StatusCreated, parseProjection(r).apply(out))
	return nil
}

func (s *server) replaceUser(w http.ResponseWriter, r *http.Request, uid string, info *reqInfo) error {
	m, err := decodeJSON(info.body)
	if err != nil {
		return err
	}
	attrs, err := s.sc.validateUser(m)
	if err != nil {
		return err
	}
	s.noteUser(info, attrs)
	return s.updateUser(w, r, uid, info, func(*resourceRec) (map[string]any, error) { return attrs, nil }, http.StatusOK)
}

// updateUser is the shared body of PUT and PATCH: mutate computes the new attributes from the stored
// record inside the transaction. A change of nothing commits no resource event and keeps the version.
func (s *server) updateUser(w http.ResponseWriter, r *http.Request, uid string, info *reqInfo,
	mutate func(old *resourceRec) (map[string]any, error), okStatus int) error {
	idp, now := info.idp, s.now()
	var out *resourceRec
	err := s.commits.Update(r.Context(), func(tx *bolt.Tx) error {
		out = nil
		old, err := getRec(tx, bucketUsers, idp.ID, uid)
		if err != nil {
			return err
		}
		if old == nil {
			return notFound("user", uid)
		}
		if err := checkIfMatch(r, old.Version); err != nil {
			return err
		}
		attrs, err := mutate(old)
		if err != nil {
			return err
		}
		s.noteUser(info, attrs)
		if strings.TrimSpace(strAttr(attrs, "userName")) == "" {
			return errorf(http.StatusBadRequest, scimInvalidValue, "userName is required")
		}
		changed := changedAttrs(old.Attrs, attrs)
		if len(changed) == 0 {
			out = old
			return appendEvents(tx, now, s.logEvent(r, info, okStatus, now))
		}
		if other := lookupUnique(tx, bucketUserName, idp.ID, strAttr(attrs, "userName")); other != "" && other != uid {
			return errorf(http.StatusConflict, scimUniqueness, "userName is already taken (case-insensitively)")
		}
		rec := &resourceRec{Attrs: attrs, Version: old.Version + 1, Created: old.Created, Modified: now}
		if err := putRec(tx, bucketUsers, idp.ID, uid, rec); err != nil {
			return err
		}
		if err := reindex(tx, uid, userIndexKeys(idp.ID, uid, old.Attrs), userIndexKeys(idp.ID, uid, attrs)); err != nil {
			return err
		}
		out = rec
		return appendEvents(tx, now, s.userEvent(idp, info, uid, rec, changed), s.logEvent(r, info, okStatus, now))
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
	var groups []string
	if proj.wants("groups") {
		s.db.View(func(tx *bolt.Tx) error { groups = userGroups(tx, idp.ID, uid); return nil })
	}
	writeJSON(w, okStatus, proj.apply(s.render(idp.ID, kindUser, uid, out, groups)))
	return nil
}

func (s *server) deleteUser(w http.ResponseWriter, r *http.Request, uid string, info *reqInfo) error {
	idp, now := info.idp, s.now()
	err := s.commits.Update(r.Context(), func(tx *bolt.Tx) error {
		old, err := getRec(tx, bucketUsers, idp.ID, uid)
		if err != nil {
			return err
		}
		if old == nil {
			return notFound("user", uid)
		}
		if err := checkIfMatch(r, old.Version); err != nil {
			return err
		}
		s.noteUser(info, old.Attrs)
		groups := children(tx, bucketUserGroups, idp.ID, uid)
		for _, gid := range groups {
			if err := removeMember(tx, idp.ID, gid, uid); err != nil {
				return err
			}
			// The group's membership changed, so its version (ETag) moves on; the change itself is
			// told by SCIMUserDeleted.Groups, not by a members event.
			g, err := getRec(tx, bucketGroups, idp.ID, gid)
			if err != nil {
				return err
			}
			if g != nil {
				g.Version++
				g.Modified = now
				if err := putRec(tx, bucketGroups, idp.ID, gid, g); err != nil {
					return err
				}
			}
		}
		if err := tx.Bucket([]byte(bucketUsers)).Delete(key(idp.ID, uid)); err != nil {
			return err
		}
		if err := reindex(tx, uid, userIndexKeys(idp.ID, uid, old.Attrs), nil); err != nil {
			return err
		}
		if groups == nil {
			groups = []string{}
		}
		ev := events.New(idp.ID, now, info.requestID, "", events.SCIMUserDeleted{
			UserID: uid, UserName: strAttr(old.Attrs, "userName"), ExternalID: strAttr(old.Attrs, "externalId"),
			Email: registryEmail(old.Attrs), Groups: groups, ResourceVersion: old.Version + 1,
			Policy: events.PolicyOf(idp.SCIMConfig),
		})
		return appendEvents(tx, now, ev, s.logEvent(r, info, http.StatusNoContent, now))
	})
	if err != nil {
		return err
	}
	info.logged = true
	s.m.users.WithLabelValues(idp.ID).Dec()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// get answers GET /Users/{id} and /Groups/{id}. A group's members are read only when the response
// includes them, so excludedAttributes=members costs the same whatever the group's size.
func (s *server) get(w http.ResponseWriter, r *http.Request, kind, id string, info *reqInfo) error {
	idp := info.idp.ID
	proj := parseProjection(r)
	var out map[string]any
	var version int64
	err := s.db.View(func(tx *bolt.Tx) error {
		bucket := bucketUsers
		if kind == kindGroup {
			bucket = bucketGroups
		}
		rec, err := getRec(tx, bucket, idp, id)
		if err != nil {
			return err
		}
		if rec == nil {
			return notFound(strings.ToLower(kind), id)
		}
		var members []string
		if kind == kindGroup {
			info.groupName, info.externalID = strAttr(rec.Attrs, "displayName"), strAttr(rec.Attrs, "externalId")
			if proj.wants("members") {
				members = children(tx, bucketMembers, idp, id)
				if members == nil {
					members = []string{}
				}
			}
		} else {
			s.noteUser(info, rec.Attrs)
			if proj.wants("groups") {
				members = userGroups(tx, idp, id)
			}
		}
		version = rec.Version
		out = s.render(idp, kind, id, rec, members)
		return nil
	})
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(version))
	if inm := r.Header.Get("If-None-Match"); inm != "" && matchesETag(inm, version) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, http.StatusOK, proj.apply(out))
	return nil
}
