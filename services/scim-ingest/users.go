package scimingest

import (
	"net/http"

	"github.com/scimflow/scimflow/events"
)

func (s *server) noteUser(info *reqInfo, attrs map[string]any) {
	info.externalID = strAttr(attrs, "externalId")
	info.email = registryEmail(attrs)
}

// writeReq builds the store request of r: its IdP, request id and If-Match, and the log record that
// commits with the change, with status as the request's status. note copies what the log names of
// the resource (user email, group name, external id) into info.
func (s *server) writeReq(r *http.Request, info *reqInfo, status int, note func(*reqInfo, map[string]any)) writeReq {
	at := s.now()
	return writeReq{idp: info.idp, requestID: info.requestID, ifMatch: r.Header.Get("If-Match"),
		log: func(id string, attrs map[string]any) events.Event {
			info.resourceID = id
			note(info, attrs)
			return s.logEvent(r, info, status, at)
		}}
}

// committed marks the request's log record as committed with its change, so serve does not write
// another.
func committed(info *reqInfo) { info.logged = true }

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
	uid, rec, err := s.store.CreateUser(r.Context(), s.writeReq(r, info, http.StatusCreated, s.noteUser), attrs)
	if err != nil {
		return err
	}
	committed(info)
	s.m.users.WithLabelValues(info.idp.ID).Inc()
	out := s.render(info.idp.ID, kindUser, uid, rec, nil)
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
	rec, err := s.store.ReplaceUser(r.Context(), s.writeReq(r, info, http.StatusOK, s.noteUser), uid, attrs)
	return s.renderUpdated(w, r, info, kindUser, uid, rec, http.StatusOK, err)
}

// renderUpdated answers a PUT or PATCH with the resource as written (or only the ETag for 204).
func (s *server) renderUpdated(w http.ResponseWriter, r *http.Request, info *reqInfo, kind, id string, rec *resourceRec, status int, err error) error {
	if err != nil {
		return err
	}
	committed(info)
	w.Header().Set("ETag", etag(rec.Version))
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return nil
	}
	proj := parseProjection(r)
	var related []string
	if (kind == kindUser && proj.wants("groups")) || (kind == kindGroup && proj.wants("members")) {
		related = s.store.related(kind, info.idp.ID, id)
	}
	writeJSON(w, status, proj.apply(s.render(info.idp.ID, kind, id, rec, related)))
	return nil
}

func (s *server) deleteUser(w http.ResponseWriter, r *http.Request, uid string, info *reqInfo) error {
	if err := s.store.DeleteUser(r.Context(), s.writeReq(r, info, http.StatusNoContent, s.noteUser), uid); err != nil {
		return err
	}
	committed(info)
	s.m.users.WithLabelValues(info.idp.ID).Dec()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// get answers GET /Users/{id} and /Groups/{id}. A group's members are read only when the response
// includes them, so excludedAttributes=members costs the same whatever the group's size.
func (s *server) get(w http.ResponseWriter, r *http.Request, kind, id string, info *reqInfo) error {
	idp := info.idp.ID
	proj := parseProjection(r)
	related := (kind == kindGroup && proj.wants("members")) || (kind == kindUser && proj.wants("groups"))
	rec, rel, err := s.store.get(kind, idp, id, related)
	if err != nil {
		return err
	}
	if kind == kindGroup {
		s.noteGroup(info, rec.Attrs)
	} else {
		s.noteUser(info, rec.Attrs)
	}
	w.Header().Set("ETag", etag(rec.Version))
	if inm := r.Header.Get("If-None-Match"); inm != "" && matchesETag(inm, rec.Version) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeJSON(w, http.StatusOK, proj.apply(s.render(idp, kind, id, rec, rel)))
	return nil
}
