package identitystore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/httpserv"
)

var noAddr netip.Addr

// Messages of the access API that warn about a change of behaviour for every protected host.
const (
	msgFirstApp = "this is the first access application: from now on every host and path that no application covers is denied (403 no_application) at /verify; create an application for every protected host"
	msgLastApp  = "no access application is left: /verify again lets every authenticated session through, as before any application existed"
)

func (s *service) listApps(w http.ResponseWriter, r *http.Request) {
	var apps []access.App
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		apps, err = appList(tx)
		return err
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	if apps == nil {
		apps = []access.App{}
	}
	writeResult(w, http.StatusOK, apps, &resultInfo{Count: len(apps), TotalCount: len(apps), Page: 1, PerPage: max(len(apps), 1)})
}

func (s *service) loadApp(w http.ResponseWriter, r *http.Request) (access.App, bool) {
	id := r.PathValue("id")
	var (
		a     access.App
		found bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		a, _, found, err = getApp(tx, id)
		return err
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return a, false
	}
	if !found {
		s.fail(w, r, fault.E(fault.NotFound, "access application %q not found", id))
		return a, false
	}
	return a, true
}

func (s *service) getApp(w http.ResponseWriter, r *http.Request) {
	if a, ok := s.loadApp(w, r); ok {
		writeResult(w, http.StatusOK, a, nil)
	}
}

// parseAppBody decodes an app body; decoding problems end the request, semantic ones are returned.
func parseAppBody(r *http.Request) (access.App, error) {
	raw, err := readBody(r)
	if err != nil {
		return access.App{}, err
	}
	a, err := access.ParseApp(raw)
	if err != nil {
		return a, fault.E(fault.Invalid, "%v", err)
	}
	return a, nil
}

// checkApp returns every problem of a against itself, the other stored apps and the IdPs.
func (s *service) checkApp(ctx context.Context, a access.App) ([]string, error) {
	probs := a.Validate()
	var others []access.App
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		others, err = loadApps(tx)
		return err
	})
	if err != nil {
		return nil, internal(err)
	}
	others = slices.DeleteFunc(others, func(o access.App) bool { return o.ID == a.ID })
	probs = append(probs, access.ValidateSet(append(others, a))...)
	if len(a.AllowedIdPs) > 0 || hasLoginMethod(a) {
		kv, err := s.kv(ctx)
		if err != nil {
			return nil, unavailable(err)
		}
		idps, err := listIdPs(ctx, kv)
		if err != nil {
			return nil, unavailable(err)
		}
		known := map[string]bool{}
		for _, p := range idps {
			known[p.ID] = true
		}
		for i, id := range a.AllowedIdPs {
			if id != "" && !known[id] {
				probs = append(probs, "allowed_idps["+strconv.Itoa(i)+"]: no identity provider "+strconv.Quote(id))
			}
		}
	}
	return probs, nil
}

func hasLoginMethod(a access.App) bool {
	for _, p := range a.Policies {
		for _, l := range [][]access.Selector{p.Include, p.Require, p.Exclude} {
			for _, s := range l {
				if s.LoginMethod != nil {
					return true
				}
			}
		}
	}
	return false
}

func (s *service) createApp(w http.ResponseWriter, r *http.Request) {
	a, err := parseAppBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var pre []string
	if a.ID != "" {
		pre = append(pre, "id: assigned by the server")
	}
	a.ID = newUUID()
	now := s.now().UTC()
	a.CreatedAt, a.UpdatedAt = now, now
	s.saveApp(w, r, a, pre, http.StatusCreated)
}

func (s *service) updateApp(w http.ResponseWriter, r *http.Request) {
	a, err := parseAppBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	old, ok := s.loadApp(w, r)
	if !ok {
		return
	}
	var pre []string
	if a.ID != "" && a.ID != old.ID {
		pre = append(pre, "id: cannot be changed")
	}
	a.ID, a.CreatedAt, a.UpdatedAt = old.ID, old.CreatedAt, s.now().UTC()
	s.saveApp(w, r, a, pre, http.StatusOK)
}

// saveApp validates a, publishes the change and waits until this store applied it.
func (s *service) saveApp(w http.ResponseWriter, r *http.Request, a access.App, pre []string, status int) {
	s.appsMu.Lock()
	defer s.appsMu.Unlock()
	probs, err := s.checkApp(r.Context(), a)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if probs = append(pre, probs...); len(probs) > 0 {
		s.fail(w, r, fault.Invalids(probs))
		return
	}
	first := false
	s.db.View(func(tx *bolt.Tx) error {
		first = tx.Bucket([]byte(bkAccessApps)).Stats().KeyN == 0
		return nil
	})
	raw, err := json.Marshal(a)
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	evID, ok := s.publishAppChange(w, r, events.AccessAppChanged{AppID: a.ID, App: raw})
	if !ok {
		return
	}
	var stored string
	s.db.View(func(tx *bolt.Tx) error {
		_, stored, _, err = getApp(tx, a.ID)
		return err
	})
	if stored != evID {
		s.fail(w, r, fault.E(fault.Conflict, "application %s conflicts with a concurrent change (same domain and path?); reload and retry", a.ID))
		return
	}
	msgs := []string{}
	if first {
		msgs = append(msgs, msgFirstApp)
	}
	writeJSON(w, status, envelope{Success: true, Errors: []envelopeError{}, Messages: msgs, Result: a})
}

func (s *service) deleteApp(w http.ResponseWriter, r *http.Request) {
	s.appsMu.Lock()
	defer s.appsMu.Unlock()
	a, ok := s.loadApp(w, r)
	if !ok {
		return
	}
	if _, ok := s.publishAppChange(w, r, events.AccessAppChanged{AppID: a.ID, Deleted: true}); !ok {
		return
	}
	msgs := []string{}
	s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(bkAccessApps)).Stats().KeyN == 0 {
			msgs = append(msgs, msgLastApp)
		}
		return nil
	})
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []envelopeError{}, Messages: msgs, Result: map[string]string{"id": a.ID}})
}

// publishAppChange publishes an admin change to IDENTITY and waits (5 s at most) for the identity
// consumer to apply it; false means the response was written (NATS unavailable, not applied in time).
func (s *service) publishAppChange(w http.ResponseWriter, r *http.Request, p events.AccessAppChanged) (string, bool) {
	p.Cause = "admin API request " + httpserv.RequestIDFrom(r.Context())
	e := events.New(events.AccessScope, s.now().UTC(), adminCorrelationPrefix+httpserv.RequestIDFrom(r.Context()), "", p)
	e.Actor = events.ActorAdmin
	data, err := events.Marshal(e)
	if err != nil {
		s.fail(w, r, internal(err))
		return "", false
	}
	ack, err := s.d.JS.Publish(r.Context(), e.Subject, data, jetstream.WithMsgID(e.ID))
	if err != nil {
		s.fail(w, r, unavailable(err))
		return "", false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if !waitCursor(ctx, s.ident.Cursor, ack.Sequence) {
		writeJSON(w, http.StatusAccepted, envelope{Success: true, Errors: []envelopeError{},
			Messages: []string{"the change is recorded (event " + e.ID + ") but not applied yet; GET the application to see it"},
			Result:   map[string]any{"id": p.AppID, "event_id": e.ID, "applied": false}})
		return "", false
	}
	return e.ID, true
}

// testBody is the optional body of the tester.
type testBody struct {
	Emails []string `json:"emails,omitempty"`
	Path   string   `json:"path,omitempty"`
}

// maxTestEmails bounds one tester request.
const maxTestEmails = 1000

func decodeTestBody(raw []byte) (testBody, error) {
	var b testBody
	if len(strings.TrimSpace(string(raw))) == 0 {
		return b, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fault.E(fault.Invalid, "invalid JSON body: %v", err)
	}
	var probs []string
	if len(b.Emails) > maxTestEmails {
		probs = append(probs, "emails: at most 1000 per request")
	}
	if b.Path != "" && !strings.HasPrefix(b.Path, "/") {
		probs = append(probs, "path: must start with /")
	}
	if len(probs) > 0 {
		return b, fault.Invalids(probs)
	}
	return b, nil
}

// testSavedApp is POST /api/v1/access/apps/{id}/test.
func (s *service) testSavedApp(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := decodeTestBody(raw)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, ok := s.loadApp(w, r)
	if !ok {
		return
	}
	c, err := access.CompileApp(a)
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	s.writeTest(w, r, c, b)
}

// testDraftApp is POST /api/v1/access/apps/test: {"app": {...}, "emails": [...], "path": "/"}.
func (s *service) testDraftApp(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var env struct {
		App    json.RawMessage `json:"app"`
		Emails []string        `json:"emails,omitempty"`
		Path   string          `json:"path,omitempty"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || len(env.App) == 0 {
		s.fail(w, r, fault.E(fault.Invalid, "want a JSON body {\"app\": {...}, \"emails\": [...], \"path\": \"/\"}"))
		return
	}
	a, err := access.ParseApp(env.App)
	if err != nil {
		s.fail(w, r, fault.E(fault.Invalid, "app: %v", err))
		return
	}
	tb, _ := json.Marshal(testBody{Emails: env.Emails, Path: env.Path})
	b, err := decodeTestBody(tb)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if a.ID == "" {
		a.ID = "draft"
	}
	if probs := a.Validate(); len(probs) > 0 {
		s.fail(w, r, fault.Invalids(probs))
		return
	}
	c, err := access.CompileApp(a)
	if err != nil {
		s.fail(w, r, fault.E(fault.Invalid, "%v", err))
		return
	}
	s.writeTest(w, r, c, b)
}

func (s *service) writeTest(w http.ResponseWriter, r *http.Request, c *access.Compiled, b testBody) {
	path := access.NormalizePath(b.Path)
	rep, err := s.testApp(c, b.Emails, path)
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []envelopeError{}, Result: rep, Messages: []string{
		"decisions use the identity each person's next login would get from the registry; a live session may hold other groups or claims until it is renewed (docs/access-policies.md); ip selectors never match here",
	}})
}

// accessLogs is GET /api/v1/logs/access: filters app_id, email, decision, since, until; limit and
// direction as the SCIM logs.
func (s *service) accessLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var probs []string
	limit := intParam(r, "limit", 100, 1, 1000, &probs)
	parseT := func(name string) time.Time {
		v := q.Get(name)
		if v == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			probs = append(probs, name+": want an RFC 3339 time")
		}
		return t
	}
	since, until := parseT("since"), parseT("until")
	dir := q.Get("direction")
	if dir == "" {
		dir = "desc"
	}
	if dir != "asc" && dir != "desc" {
		probs = append(probs, "direction: want asc or desc")
	}
	decision := q.Get("decision")
	if decision != "" && decision != access.Allow && decision != access.Deny && decision != access.Bypass {
		probs = append(probs, "decision: want allow, deny or bypass")
	}
	if len(probs) > 0 {
		s.fail(w, r, fault.Invalids(probs))
		return
	}
	apps := map[string]bool{}
	for _, v := range q["app_id"] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				apps[p] = true
			}
		}
	}
	email := normEmail(q.Get("email"))
	out := []accessRow{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return scanTimeLog(tx, bkAccessLog, since, until, dir == "asc", func(v []byte) (bool, error) {
			var row accessRow
			if err := json.Unmarshal(v, &row); err != nil {
				return false, err
			}
			if len(apps) > 0 && !apps[row.AppID] || email != "" && row.Email != email || decision != "" && row.Decision != decision {
				return true, nil
			}
			out = append(out, row)
			return len(out) < limit, nil
		})
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	writeResult(w, http.StatusOK, out, &resultInfo{Count: len(out), PerPage: limit})
}

// scanTimeLog visits the rows of a bucket keyed by event time (8 bytes) and id within [since, until]
// (zero: open), oldest first when asc, until f returns false.
func scanTimeLog(tx *bolt.Tx, bucket string, since, until time.Time, asc bool, f func(v []byte) (bool, error)) error {
	c := tx.Bucket([]byte(bucket)).Cursor()
	var k, v []byte
	if asc {
		if since.IsZero() {
			k, v = c.First()
		} else {
			k, v = c.Seek(timeKey(since))
		}
	} else if until.IsZero() {
		k, v = c.Last()
	} else if k, v = c.Seek(timeKey(until.Add(time.Nanosecond))); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil; func() {
		if asc {
			k, v = c.Next()
		} else {
			k, v = c.Prev()
		}
	}() {
		if len(k) < 8 {
			continue
		}
		t := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
		if asc && !until.IsZero() && t.After(until) || !asc && !since.IsZero() && t.Before(since) {
			return nil
		}
		if !since.IsZero() && t.Before(since) || !until.IsZero() && t.After(until) {
			continue
		}
		more, err := f(v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
