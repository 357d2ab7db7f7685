package identitystore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/httpserv"
)

// Error kinds of the admin API; writeError maps them to statuses.
type kind int

const (
	kindInternal kind = iota
	kindInvalid
	kindUnauthorized
	kindNotFound
	kindConflict
	kindUnavailable
)

var kindStatus = map[kind]int{
	kindInternal: http.StatusInternalServerError, kindInvalid: http.StatusBadRequest,
	kindUnauthorized: http.StatusUnauthorized, kindNotFound: http.StatusNotFound,
	kindConflict: http.StatusConflict, kindUnavailable: http.StatusServiceUnavailable,
}

// adminError is an error as data: a kind and one message per problem.
type adminError struct {
	kind kind
	msgs []string
	err  error // internal cause, logged, never shown
}

func (e *adminError) Error() string { return strings.Join(e.msgs, "; ") }

func errorf(k kind, format string, args ...any) *adminError {
	return &adminError{kind: k, msgs: []string{fmt.Sprintf(format, args...)}}
}

func internal(err error) *adminError {
	return &adminError{kind: kindInternal, msgs: []string{"internal error"}, err: err}
}

func unavailable(err error) *adminError {
	return &adminError{kind: kindUnavailable, msgs: []string{"NATS is unavailable; retry later"}, err: err}
}

// envelope is Cloudflare's API response shape.
type envelope struct {
	Success    bool        `json:"success"`
	Errors     []apiError  `json:"errors"`
	Messages   []string    `json:"messages"`
	Result     any         `json:"result"`
	ResultInfo *resultInfo `json:"result_info,omitempty"`
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type resultInfo struct {
	Page       int `json:"page,omitempty"`
	PerPage    int `json:"per_page,omitempty"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"` // every list sets it; 0 is an answer
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeResult(w http.ResponseWriter, status int, result any, info *resultInfo) {
	writeResultMessages(w, status, result, info, nil)
}

// writeResultMessages is writeResult with messages (warnings that did not stop the request).
func writeResultMessages(w http.ResponseWriter, status int, result any, info *resultInfo, msgs []string) {
	if msgs == nil {
		msgs = []string{}
	}
	writeJSON(w, status, envelope{Success: true, Errors: []apiError{}, Messages: msgs, Result: result, ResultInfo: info})
}

// checkAgainstProvider runs the save-time check of an IdP that passed validateIdP: problems refuse
// the save (400 naming the field and reason), warnings (the provider could not be reached) are
// returned for the response's messages.
func (s *service) checkAgainstProvider(r *http.Request, p events.IdP) ([]string, error) {
	res := s.probe(r.Context(), p.Config)
	if len(res.Problems) > 0 {
		return nil, &adminError{kind: kindInvalid, msgs: res.Problems}
	}
	return res.Warnings, nil
}

// writeError is the one place that maps error kinds to statuses; only internal errors are logged.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var ae *adminError
	if !errors.As(err, &ae) {
		ae = internal(err)
	}
	status := kindStatus[ae.kind]
	if ae.kind == kindInternal || ae.kind == kindUnavailable {
		log.Error("admin API error", "err", ae.err, "path", r.URL.Path, "request_id", httpserv.RequestIDFrom(r.Context()))
	}
	env := envelope{Success: false, Messages: []string{}, Errors: []apiError{}}
	for _, m := range ae.msgs {
		env.Errors = append(env.Errors, apiError{Code: status, Message: m})
	}
	writeJSON(w, status, env)
}

func (s *service) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, r, s.d.Log(), err)
}

func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(kindInvalid, "body larger than %d bytes", mbe.Limit)
		}
		return nil, errorf(kindInvalid, "read body: %v", err)
	}
	return b, nil
}

func (s *service) kvOrFail(w http.ResponseWriter, r *http.Request) (jetstream.KeyValue, bool) {
	kv, err := s.kv(r.Context())
	if err != nil {
		s.fail(w, r, unavailable(err))
		return nil, false
	}
	return kv, true
}

// --- identity providers ---

func (s *service) createIdP(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := decodeBody(raw)
	if err != nil {
		s.fail(w, r, errorf(kindInvalid, "%v", err))
		return
	}
	var probs []string
	if b.ID != "" {
		probs = append(probs, "id: assigned by the server")
	}
	if b.SCIMConfig.Secret != "" || b.SCIMConfig.SecretSHA256 != "" {
		probs = append(probs, "scim_config.secret: generated by the server (see refresh_scim_secret)")
	}
	kv, ok := s.kvOrFail(w, r)
	if !ok {
		return
	}
	all, err := listIdPs(r.Context(), kv)
	if err != nil {
		s.fail(w, r, unavailable(err))
		return
	}
	p := b.toIdP()
	p.ID = newUUID()
	if probs = append(probs, validateIdP(p, all)...); len(probs) > 0 {
		s.fail(w, r, &adminError{kind: kindInvalid, msgs: probs})
		return
	}
	warnings, err := s.checkAgainstProvider(r, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	secret, digest, err := newSecret()
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	now := s.now().UTC()
	p.SCIMConfig.SecretSHA256, p.CreatedAt, p.UpdatedAt = digest, now, now
	enc, _ := json.Marshal(p)
	if _, err := kv.Create(r.Context(), p.ID, enc); err != nil {
		s.fail(w, r, unavailable(err))
		return
	}
	writeResultMessages(w, http.StatusCreated, s.view(p, secret), nil, warnings)
}

func (s *service) listIdPs(w http.ResponseWriter, r *http.Request) {
	kv, ok := s.kvOrFail(w, r)
	if !ok {
		return
	}
	all, err := listIdPs(r.Context(), kv)
	if err != nil {
		s.fail(w, r, unavailable(err))
		return
	}
	out := make([]idpView, 0, len(all))
	for _, p := range all {
		out = append(out, s.view(p, ""))
	}
	writeResult(w, http.StatusOK, out, &resultInfo{Count: len(out), TotalCount: len(out), Page: 1, PerPage: max(len(out), 1)})
}

func (s *service) loadIdP(w http.ResponseWriter, r *http.Request) (jetstream.KeyValue, events.IdP, uint64, bool) {
	kv, ok := s.kvOrFail(w, r)
	if !ok {
		return nil, events.IdP{}, 0, false
	}
	id := r.PathValue("id")
	p, rev, err := getIdP(r.Context(), kv, id)
	if errors.Is(err, errNotFound) {
		s.fail(w, r, errorf(kindNotFound, "identity provider %q not found", id))
		return nil, p, 0, false
	}
	if err != nil {
		s.fail(w, r, unavailable(err))
		return nil, p, 0, false
	}
	return kv, p, rev, true
}

func (s *service) getIdP(w http.ResponseWriter, r *http.Request) {
	if _, p, _, ok := s.loadIdP(w, r); ok {
		writeResult(w, http.StatusOK, s.view(p, ""), nil)
	}
}

func (s *service) updateIdP(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := decodeBody(raw)
	if err != nil {
		s.fail(w, r, errorf(kindInvalid, "%v", err))
		return
	}
	kv, old, rev, ok := s.loadIdP(w, r)
	if !ok {
		return
	}
	var probs []string
	if b.ID != "" && b.ID != old.ID {
		probs = append(probs, "id: cannot be changed")
	}
	if b.SCIMConfig.Secret != "" || b.SCIMConfig.SecretSHA256 != "" {
		probs = append(probs, "scim_config.secret: read-only (see refresh_scim_secret)")
	}
	p := b.toIdP()
	p.ID = old.ID
	if p.Config.ClientSecret == "" || p.Config.ClientSecret == Redacted {
		p.Config.ClientSecret = old.Config.ClientSecret
	}
	all, err := listIdPs(r.Context(), kv)
	if err != nil {
		s.fail(w, r, unavailable(err))
		return
	}
	if probs = append(probs, validateIdP(p, all)...); len(probs) > 0 {
		s.fail(w, r, &adminError{kind: kindInvalid, msgs: probs})
		return
	}
	warnings, err := s.checkAgainstProvider(r, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.SCIMConfig.SecretSHA256 = old.SCIMConfig.SecretSHA256
	p.SCIMConfig.PreviousSecretSHA256 = old.SCIMConfig.PreviousSecretSHA256
	p.SCIMConfig.SecretRotatedAt = old.SCIMConfig.SecretRotatedAt
	p.CreatedAt, p.UpdatedAt = old.CreatedAt, s.now().UTC()
	enc, _ := json.Marshal(p)
	if _, err := kv.Update(r.Context(), p.ID, enc, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			s.fail(w, r, errorf(kindConflict, "identity provider %s changed concurrently; retry", p.ID))
			return
		}
		s.fail(w, r, unavailable(err))
		return
	}
	writeResultMessages(w, http.StatusOK, s.view(p, ""), nil, warnings)
}

func (s *service) deleteIdP(w http.ResponseWriter, r *http.Request) {
	kv, p, _, ok := s.loadIdP(w, r)
	if !ok {
		return
	}
	// Its sessions are revoked first, through IDENTITY (every auth replica, and a replay, see it): if
	// that fails nothing changed, and if the deletion then fails the revocation stands and the
	// DELETE can be retried. auth keeps the revocation per IdP id, so the same id created again (a
	// config seed at the next start) does not bring the old sessions back.
	revoke := func() ([]string, bool, error) {
		return s.publishFacts(r, p.ID, events.IdPSessionsRevoked{RevokedBefore: s.now().UTC(), Reason: events.ReasonIdPDeleted,
			Cause: "admin API request " + httpserv.RequestIDFrom(r.Context())})
	}
	ids, _, err := revoke()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := kv.Delete(r.Context(), p.ID); err != nil {
		s.fail(w, r, unavailable(err))
		return
	}
	// A login already past /login when the first revocation was applied could still finish before
	// auth's idp_config watch drops the IdP. A second revocation, once the IdP is gone from the
	// bucket, covers it (auth revokes every session built before it applies one). Its failure leaves
	// only that narrow window open, so it is logged, not reported as a failed deletion.
	more, applied, err := revoke()
	if err != nil {
		s.d.Log().Error("identity provider deleted; second revocation of its sessions not published", "idp_id", p.ID, "err", err,
			"request_id", httpserv.RequestIDFrom(r.Context()))
	}
	writeResult(w, http.StatusOK, idpActionResult{ID: p.ID, EventIDs: append(ids, more...), Applied: applied}, nil)
}

// refreshSecret issues a new SCIM secret. The previous digest and the rotation time are kept so that
// scim-ingest can accept the old secret for its grace period.
func (s *service) refreshSecret(w http.ResponseWriter, r *http.Request) {
	kv, p, rev, ok := s.loadIdP(w, r)
	if !ok {
		return
	}
	secret, digest, err := newSecret()
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	now := s.now().UTC()
	p.SCIMConfig.PreviousSecretSHA256 = p.SCIMConfig.SecretSHA256
	p.SCIMConfig.SecretSHA256, p.SCIMConfig.SecretRotatedAt, p.UpdatedAt = digest, now, now
	enc, _ := json.Marshal(p)
	if _, err := kv.Update(r.Context(), p.ID, enc, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			s.fail(w, r, errorf(kindConflict, "identity provider %s changed concurrently; retry", p.ID))
			return
		}
		s.fail(w, r, unavailable(err))
		return
	}
	writeResult(w, http.StatusOK, s.view(p, secret), nil)
}

// --- users ---

type userSummary struct {
	ID         string    `json:"id"`
	IdPID      string    `json:"idp_id"`
	Email      string    `json:"email"`
	Name       string    `json:"name,omitempty"`
	Status     string    `json:"status"`
	SeatHeld   bool      `json:"seat_held"`
	Locked     bool      `json:"locked"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	SCIMUserID string    `json:"scim_user_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func summary(u *user) userSummary {
	return userSummary{ID: u.ID, IdPID: u.IdPID, Email: u.Email, Name: u.Name, Status: u.status(), SeatHeld: u.seatHeld(),
		Locked: u.Locked, LastSeen: u.LastLoginAt, SCIMUserID: u.SCIMUserID, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, errorf(kindInvalid, "%s: want an integer in [%d, %d]", name, lo, hi)
	}
	return n, nil
}

// errPageFull stops a scan once a page of users is complete.
var errPageFull = errors.New("page full")

// countUsers returns how many users of idp ("" for every IdP) have status ("" for any) from the
// stat counters, without reading a user.
func countUsers(tx *bolt.Tx, idp, status string) (int, error) {
	n := int64(0)
	err := prefixScan(tx, bkStats, key("users", ""), func(k, v []byte) error {
		parts := bytes.Split(k, []byte{0})
		if len(parts) != 3 || len(v) != 8 {
			return nil
		}
		if (idp == "" || string(parts[1]) == idp) && (status == "" || string(parts[2]) == status) {
			n += int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return int(max(n, 0)), err
}

func (s *service) listUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	email, idp, status := normEmail(q.Get("email")), q.Get("idp_id"), q.Get("status")
	page, err1 := intParam(r, "page", 1, 1, 1<<30)
	perPage, err2 := intParam(r, "per_page", 50, 1, 1000)
	if err := errors.Join(err1, err2); err != nil {
		s.fail(w, r, errorf(kindInvalid, "%v", err))
		return
	}
	if status != "" && status != events.StatusActive && status != events.StatusInactive && status != events.StatusProvisioned {
		s.fail(w, r, errorf(kindInvalid, "status: want provisioned, active or inactive"))
		return
	}
	var out []userSummary
	total := 0
	skip := (page - 1) * perPage
	match := func(u *user) {
		if (idp != "" && u.IdPID != idp) || (status != "" && u.status() != status) || (email != "" && u.Email != email && (u.SCIM == nil || u.SCIM.Email != email)) {
			return
		}
		total++
		if total > skip && len(out) < perPage {
			out = append(out, summary(u))
		}
	}
	qs := q.Get("q")
	if len(qs) > maxQueryLen {
		s.fail(w, r, errorf(kindInvalid, "q: at most %d bytes", maxQueryLen))
		return
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if strings.TrimSpace(qs) != "" {
			// Prefix search over the email and name indexes (search.go), then the other filters.
			hits, err := searchUsers(tx, qs, idp)
			if err != nil {
				return err
			}
			for _, h := range hits {
				if status != "" && !hasStatus(tx, h, status) {
					continue
				}
				if email != "" {
					// Rare with q: the exact email filter needs the record.
					u, err := getUser(tx, h.id)
					if err != nil {
						return err
					}
					if u != nil {
						match(u)
					}
					continue
				}
				total++
				if total <= skip || len(out) >= perPage {
					continue
				}
				u, err := getUser(tx, h.id)
				if err != nil {
					return err
				}
				if u != nil {
					out = append(out, summary(u))
				}
			}
			return nil
		}
		if email != "" {
			// The email index: exact per IdP, or every IdP's entry for that email.
			seen := map[string]bool{}
			return prefixScan(tx, bkEmail, key(email, ""), func(_, v []byte) error {
				if seen[string(v)] {
					return nil
				}
				seen[string(v)] = true
				u, err := getUser(tx, string(v))
				if err == nil && u != nil {
					match(u)
				}
				return err
			})
		}
		// Without q or email the total comes from the counters the projection maintains per (IdP,
		// status), so listing costs the page, not the registry (a scan of every user took 132 ms at
		// 100,000); the scan stops once the page is full. Without a status filter only the users of
		// the page are decoded; the IdP filter uses its index.
		counted, err := countUsers(tx, idp, status)
		if err != nil {
			return err
		}
		seen := 0
		visit := func(uid []byte) error {
			if len(out) >= perPage {
				return errPageFull
			}
			if status == "" {
				if seen++; seen <= skip {
					return nil
				}
				total = seen - 1 // match counts this one and keeps it (total > skip)
			}
			u, err := getUser(tx, string(uid))
			if err != nil || u == nil {
				return err
			}
			match(u)
			return nil
		}
		if status != "" {
			// The status index (search.go): only the page's users are decoded.
			p := key(status, "")
			if idp != "" {
				p = key(status, idp, "")
			}
			return prefixScan(tx, bkStatus, p, func(k, _ []byte) error {
				total++
				if total <= skip || len(out) >= perPage {
					return nil
				}
				u, err := getUser(tx, lastPart(k))
				if err == nil && u != nil {
					out = append(out, summary(u))
				}
				return err
			})
		}
		if idp != "" {
			err = prefixScan(tx, bkIdPUsers, key(idp, ""), func(k, _ []byte) error { return visit([]byte(lastPart(k))) })
		} else {
			err = tx.Bucket([]byte(bkUsers)).ForEach(func(k, _ []byte) error { return visit(k) })
		}
		total = counted
		if errors.Is(err, errPageFull) {
			return nil
		}
		return err
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	if out == nil {
		out = []userSummary{}
	}
	writeResult(w, http.StatusOK, out, &resultInfo{Page: page, PerPage: perPage, Count: len(out), TotalCount: total})
}

type sessionView struct {
	SessionIDHash string    `json:"session_id_hash"`
	IssuedAt      time.Time `json:"issued_at"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// activeSessions lists the user's valid sessions: unexpired at now, issued after revoked_before, not
// logged out (logged-out sessions are deleted), and the user not locked (docs/design.md §4).
//
// Sessions of an IdP that was deleted (up to its deletion) are not valid either.
func activeSessions(tx *bolt.Tx, u *user, now time.Time) ([]sessionView, error) {
	out := []sessionView{}
	ip, err := getIdPState(tx, u.IdPID)
	if err != nil {
		return nil, err
	}
	err = prefixScan(tx, bkSessions, key(u.ID, ""), func(k, v []byte) error {
		var ss session
		if err := json.Unmarshal(v, &ss); err != nil {
			return err
		}
		if ss.ExpiresAt.After(now) && ss.IssuedAt.After(u.RevokedBefore) && ss.IssuedAt.After(ip.SessionsRevokedBefore) && !u.Locked {
			out = append(out, sessionView{SessionIDHash: lastPart(k), IssuedAt: ss.IssuedAt, ExpiresAt: ss.ExpiresAt})
		}
		return nil
	})
	return out, err
}

type seatView struct {
	Held      bool      `json:"held"`
	TakenAt   time.Time `json:"taken_at,omitzero"`
	RemovedAt time.Time `json:"removed_at,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
}

type userDetail struct {
	userSummary
	Identity       events.Identity `json:"identity"`
	Seat           seatView        `json:"seat"`
	RevokedBefore  *time.Time      `json:"revoked_before,omitempty"`
	SCIM           *scimState      `json:"scim,omitempty"`
	ActiveSessions []sessionView   `json:"active_sessions"`
	History        []historyEntry  `json:"history"`
	// OIDCSub is the OIDC sub bound to the person (only a login with it is let in), with the time of
	// the login that bound it; absent when no binding holds (never logged in, or reset).
	OIDCSub    string           `json:"oidc_sub,omitempty"`
	SubBoundAt time.Time        `json:"oidc_sub_bound_at,omitzero"`
	IdentityAt *events.Identity `json:"identity_at,omitempty"`
}

// getUser returns a user's registry identity, seat, status, active sessions and history (newest
// first, ?history_limit, default 100). ?at=RFC3339 adds identity_at: the identity as it was then.
func (s *service) getUser(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	limit, err := intParam(r, "history_limit", 100, 0, 10000)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var at time.Time
	if v := r.URL.Query().Get("at"); v != "" {
		if at, err = time.Parse(time.RFC3339Nano, v); err != nil {
			s.fail(w, r, errorf(kindInvalid, "at: want an RFC 3339 time"))
			return
		}
	}
	now := s.now()
	var d *userDetail
	err = s.db.View(func(tx *bolt.Tx) error {
		u, err := getUser(tx, id)
		if err != nil || u == nil {
			return err
		}
		d = &userDetail{userSummary: summary(u), Identity: u.identity(), SCIM: u.SCIM, ActiveSessions: []sessionView{}, History: []historyEntry{},
			Seat: seatView{Held: u.seatHeld(), TakenAt: u.SeatTakenAt, RemovedAt: u.SeatRemovedAt, LastSeen: u.LastLoginAt}}
		d.RevokedBefore = d.Identity.RevokedBefore
		if d.SCIM != nil {
			if _, err := getJSON(tx, bkSCIMAttrs, []byte(u.ID), &d.SCIM.Attributes); err != nil {
				return err
			}
		}
		if d.ActiveSessions, err = activeSessions(tx, u, now); err != nil {
			return err
		}
		ip, err := getIdPState(tx, u.IdPID)
		if err != nil {
			return err
		}
		if d.OIDCSub = u.boundSub(ip); d.OIDCSub != "" {
			d.SubBoundAt = u.SubBoundAt
		}
		c := tx.Bucket([]byte(bkHistory)).Cursor()
		p := key(u.ID, "")
		end := append(slices.Clone(p), 0xff)
		var v []byte
		k, _ := c.Seek(end)
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		var bestSeq uint64
		for ; k != nil && bytes.HasPrefix(k, p); k, v = c.Prev() {
			var h historyEntry
			if err := json.Unmarshal(v, &h); err != nil {
				return err
			}
			if !at.IsZero() && !h.At.After(at) && h.Seq >= bestSeq {
				ident := h.After
				d.IdentityAt, bestSeq = &ident, h.Seq
			}
			if len(d.History) < limit {
				d.History = append(d.History, h)
			}
			if len(d.History) >= limit && at.IsZero() {
				break
			}
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	if d == nil {
		s.fail(w, r, errorf(kindNotFound, "user %q not found", id))
		return
	}
	if !at.IsZero() && d.IdentityAt == nil {
		s.fail(w, r, errorf(kindNotFound, "user %q did not exist at %s", id, at.Format(time.RFC3339)))
		return
	}
	writeResult(w, http.StatusOK, d, nil)
}

func (s *service) loadUser(w http.ResponseWriter, r *http.Request) (*user, bool) {
	id := r.PathValue("id")
	var u *user
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		u, err = getUser(tx, id)
		return err
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return nil, false
	}
	if u == nil {
		s.fail(w, r, errorf(kindNotFound, "user %q not found", id))
		return nil, false
	}
	return u, true
}

type adminActionResult struct {
	UserID   string       `json:"user_id"`
	EventIDs []string     `json:"event_ids"`
	Applied  bool         `json:"applied"` // false: published, not yet applied here (202)
	User     *userSummary `json:"user,omitempty"`
}

// publishAdmin publishes admin facts to IDENTITY (they are applied from there by the identitystore-
// identity consumer, so a replay sees them) and waits briefly for them to be applied.
func (s *service) publishAdmin(w http.ResponseWriter, r *http.Request, u *user, ps ...events.Payload) {
	res := adminActionResult{UserID: u.ID}
	var err error
	if res.EventIDs, res.Applied, err = s.publishFacts(r, u.IdPID, ps...); err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusAccepted
	if res.Applied {
		status = http.StatusOK
		if nu, ok := s.loadUser(w, r); ok {
			sum := summary(nu)
			res.User = &sum
		} else {
			return
		}
	}
	writeResult(w, status, res, nil)
}

// publishFacts publishes admin facts of IdP idp to IDENTITY, correlated with the request, and waits
// up to 5 s for this service to apply them (applied false: published, not yet applied here).
func (s *service) publishFacts(r *http.Request, idp string, ps ...events.Payload) (ids []string, applied bool, err error) {
	corr := adminCorrelationPrefix + httpserv.RequestIDFrom(r.Context())
	now := s.now().UTC()
	ids = []string{}
	var last uint64
	for _, p := range ps {
		e := events.New(idp, now, corr, "", p)
		e.Actor = events.ActorAdmin
		data, err := events.Marshal(e)
		if err != nil {
			return nil, false, internal(err)
		}
		// A revocation is a security fact: a copy goes on IDENTITY_PRIORITY first, so it reaches every
		// auth replica ahead of whatever backlog the IDENTITY stream holds (auth merges revoked_before
		// as a maximum, so the two copies apply in either order; priority.go).
		if revocation(p) {
			pe := events.Derived(e, priorityIndex, p)
			pdata, err := events.Marshal(pe)
			if err != nil {
				return nil, false, internal(err)
			}
			if _, err := s.d.JS.Publish(r.Context(), events.PriorityPrefix+pe.Subject, pdata, jetstream.WithMsgID(pe.ID)); err != nil {
				return nil, false, unavailable(err)
			}
		}
		ack, err := s.d.JS.Publish(r.Context(), e.Subject, data, jetstream.WithMsgID(e.ID))
		if err != nil {
			return nil, false, unavailable(err)
		}
		last = ack.Sequence
		ids = append(ids, e.ID)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	return ids, waitCursor(ctx, s.ident.Cursor, last), nil
}

// revocation reports whether an admin fact ends sessions (and so also travels on the priority lane).
func revocation(p events.Payload) bool {
	switch p.(type) {
	case events.SessionsRevoked, events.IdPSessionsRevoked:
		return true
	}
	return false
}

// idpActionResult is the answer of an action on a whole IdP.
type idpActionResult struct {
	ID       string   `json:"id"`
	EventIDs []string `json:"event_ids"`
	Applied  bool     `json:"applied"` // false: published, not yet applied here
}

// unlockUser lifts the user's lock (a deprovisioning lock, or one an admin wants gone after fixing
// the IdP's data). Sessions issued before the lock stay invalid: the lock moved revoked_before. The
// SCIM state is not touched: while the IdP still sends active=false the user shows inactive, and the
// IdP's next deactivation locks again. Unlocking a user that is not locked changes nothing.
func (s *service) unlockUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.loadUser(w, r)
	if !ok {
		return
	}
	if !u.Locked {
		sum := summary(u)
		writeResult(w, http.StatusOK, adminActionResult{UserID: u.ID, EventIDs: []string{}, Applied: true, User: &sum}, nil)
		return
	}
	s.publishAdmin(w, r, u, events.UserUnlocked{UserID: u.ID, Email: u.Email, Reason: events.ReasonUnlocked})
}

// resetSub voids the user's OIDC sub binding: the next login binds its sub afresh (an account
// replaced at the IdP on purpose). Sessions stay as they are.
func (s *service) resetSub(w http.ResponseWriter, r *http.Request) {
	u, ok := s.loadUser(w, r)
	if !ok {
		return
	}
	s.publishAdmin(w, r, u, events.SubReset{UserID: u.ID, Email: u.Email, Reason: events.ReasonAdmin})
}

// resetSubBindings voids every sub binding of the IdP (its app registration was replaced, which
// changes every sub at Entra ID): each person's next login binds afresh.
func (s *service) resetSubBindings(w http.ResponseWriter, r *http.Request) {
	_, p, _, ok := s.loadIdP(w, r)
	if !ok {
		return
	}
	ids, applied, err := s.publishFacts(r, p.ID, events.IdPSubBindingsReset{Reason: events.ReasonAdmin,
		Cause: "admin API request " + httpserv.RequestIDFrom(r.Context())})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if !applied {
		status = http.StatusAccepted
	}
	writeResult(w, status, idpActionResult{ID: p.ID, EventIDs: ids, Applied: applied}, nil)
}

func waitCursor(ctx context.Context, cursor func() uint64, seq uint64) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for cursor() < seq {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// revokeUser ends every session of the user (Cloudflare's per-user revoke): the seat is kept and the
// user may log in again unless locked.
func (s *service) revokeUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.loadUser(w, r)
	if !ok {
		return
	}
	s.publishAdmin(w, r, u, events.SessionsRevoked{UserID: u.ID, Email: u.Email, RevokedBefore: s.now().UTC(), Reason: events.ReasonAdmin,
		Cause: "admin API request " + httpserv.RequestIDFrom(r.Context())})
}

// removeSeat frees the user's seat and ends their sessions (Cloudflare's "remove"): the user shows
// inactive and takes a seat again at the next login. Removing a seat that is not held is a no-op.
func (s *service) removeSeat(w http.ResponseWriter, r *http.Request) {
	u, ok := s.loadUser(w, r)
	if !ok {
		return
	}
	if !u.seatHeld() {
		sum := summary(u)
		writeResult(w, http.StatusOK, adminActionResult{UserID: u.ID, EventIDs: []string{}, Applied: true, User: &sum}, nil)
		return
	}
	now := s.now().UTC()
	s.publishAdmin(w, r, u,
		events.SessionsRevoked{UserID: u.ID, Email: u.Email, RevokedBefore: now, Reason: events.ReasonSeatRemoved, Cause: "admin API request " + httpserv.RequestIDFrom(r.Context())},
		events.SeatRemoved{UserID: u.ID, Email: u.Email, Reason: events.ReasonAdmin})
}

// --- SCIM provisioning logs ---

// logView is a log row as Cloudflare returns it: request_body is a JSON-encoded string. idp names
// the IdP (id and its current name; the name is empty for an IdP deleted since).
type logView struct {
	logRow
	IdP         logIdP `json:"idp"`
	RequestBody string `json:"request_body,omitempty"`
}

type logIdP struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// scimLogParams are the query parameters of GET /api/v1/logs/scim; any other name is refused, so a
// typo never silently returns every row (or none).
var scimLogParams = []string{"idp_id", "status", "resource_type", "request_method", "resource_user_email", "resource_group_name",
	"cf_resource_id", "idp_resource_id", "since", "until", "direction", "page", "per_page", "limit"}

// scimLogValues are the values each enumerated filter accepts (any case): what scim-ingest records.
var scimLogValues = map[string][]string{
	"status":         {events.LogSuccess, events.LogError},
	"resource_type":  {"USER", "GROUP"},
	"request_method": {http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
}

func (s *service) scimLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var probs []string
	for name := range q {
		if !slices.Contains(scimLogParams, name) {
			probs = append(probs, fmt.Sprintf("%s: unknown parameter (known: %s)", name, strings.Join(scimLogParams, ", ")))
		}
	}
	list := func(name string) []string {
		var out []string
		for _, v := range q[name] {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	enum := func(name string) map[string]bool {
		var m map[string]bool
		for _, p := range list(name) {
			p = strings.ToUpper(p)
			if !slices.Contains(scimLogValues[name], p) {
				probs = append(probs, fmt.Sprintf("%s: %q is not one of %s", name, p, strings.Join(scimLogValues[name], ", ")))
				continue
			}
			if m == nil {
				m = map[string]bool{}
			}
			m[p] = true
		}
		return m
	}
	idps := map[string]bool{}
	for _, p := range list("idp_id") {
		idps[p] = true
	}
	statuses, types, methods := enum("status"), enum("resource_type"), enum("request_method")
	userEmail, groupName := normEmail(q.Get("resource_user_email")), q.Get("resource_group_name")
	cfID, idpResID := q.Get("cf_resource_id"), q.Get("idp_resource_id")
	page, err := intParam(r, "page", 1, 1, 1<<30)
	if err != nil {
		probs = append(probs, err.Error())
	}
	// limit is the older name of per_page; both may be given only with the same value.
	perPage, err := intParam(r, "per_page", 100, 1, 1000)
	if err != nil {
		probs = append(probs, err.Error())
	}
	if q.Has("limit") {
		limit, err := intParam(r, "limit", 100, 1, 1000)
		switch {
		case err != nil:
			probs = append(probs, err.Error())
		case q.Has("per_page") && limit != perPage:
			probs = append(probs, "limit: an alias of per_page; give one, or both with the same value")
		default:
			perPage = limit
		}
	}
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
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		probs = append(probs, "until: before since")
	}
	dir := q.Get("direction")
	if dir == "" {
		dir = "desc"
	}
	if dir != "asc" && dir != "desc" {
		probs = append(probs, "direction: want asc or desc")
	}
	if len(probs) > 0 {
		slices.Sort(probs) // map order above; a stable answer reads better
		s.fail(w, r, &adminError{kind: kindInvalid, msgs: probs})
		return
	}
	out := []logView{}
	total, skip := 0, (page-1)*perPage
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(bkSCIMLog)).Cursor()
		var k, v []byte
		if dir == "asc" {
			k, v = c.First()
			if !since.IsZero() {
				k, v = c.Seek(timeKey(since))
			}
		} else {
			k, v = c.Last()
			if !until.IsZero() {
				if k, v = c.Seek(timeKey(until.Add(time.Nanosecond))); k == nil {
					k, v = c.Last()
				} else {
					k, v = c.Prev()
				}
			}
		}
		// Every matching row is counted (total_count); only the page's rows are kept.
		for ; k != nil; func() {
			if dir == "asc" {
				k, v = c.Next()
			} else {
				k, v = c.Prev()
			}
		}() {
			t := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
			if (!since.IsZero() && t.Before(since)) || (!until.IsZero() && t.After(until)) {
				if dir == "asc" && !until.IsZero() && t.After(until) || dir == "desc" && !since.IsZero() && t.Before(since) {
					break
				}
				continue
			}
			var row logRow
			if err := json.Unmarshal(v, &row); err != nil {
				return err
			}
			if len(idps) > 0 && !idps[row.IdPID] || statuses != nil && !statuses[strings.ToUpper(row.Status)] ||
				types != nil && !types[strings.ToUpper(row.ResourceType)] || methods != nil && !methods[strings.ToUpper(row.RequestMethod)] ||
				userEmail != "" && row.ResourceUserEmail != userEmail || groupName != "" && !strings.EqualFold(row.ResourceGroupName, groupName) ||
				cfID != "" && row.CFResourceID != cfID || idpResID != "" && row.IdPResourceID != idpResID {
				continue
			}
			total++
			if total <= skip || len(out) >= perPage {
				continue
			}
			lv := logView{logRow: row, IdP: logIdP{ID: row.IdPID}}
			if len(row.RequestBody) > 0 {
				lv.RequestBody = string(row.RequestBody)
			}
			lv.logRow.RequestBody = nil
			out = append(out, lv)
		}
		return nil
	})
	if err != nil {
		s.fail(w, r, internal(err))
		return
	}
	var msgs []string
	if len(out) > 0 {
		// Names come from idp_config; without NATS the rows are still served, and the answer says so.
		names, err := s.idpNames(r.Context())
		if err != nil {
			msgs = append(msgs, "IdP names unavailable (NATS): idp.name is empty")
		}
		for i := range out {
			out[i].IdP.Name = names[out[i].IdPID]
		}
	}
	writeResultMessages(w, http.StatusOK, out, &resultInfo{Page: page, PerPage: perPage, Count: len(out), TotalCount: total}, msgs)
}

// idpNames maps every stored IdP's id to its name.
func (s *service) idpNames(ctx context.Context) (map[string]string, error) {
	kv, err := s.kv(ctx)
	if err != nil {
		return nil, err
	}
	all, err := listIdPs(ctx, kv)
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(all))
	for _, p := range all {
		names[p.ID] = p.Name
	}
	return names, nil
}
