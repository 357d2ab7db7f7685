package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/oauth2"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/person"
)

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// handleLogin starts an OIDC login: GET /login?idp_id=…&redirect_url=….
func (s *server) handleLogin(w http.ResponseWriter, r *http.Request) { s.startLogin(w, r, false) }

// handleTest is the IdP's "Test" button: a login that shows the identity instead of making a session.
func (s *server) handleTest(w http.ResponseWriter, r *http.Request) { s.startLogin(w, r, true) }

func (s *server) startLogin(w http.ResponseWriter, r *http.Request, test bool) {
	q := r.URL.Query()
	idpID := q.Get("idp_id")
	if idpID == "" {
		if ids := s.idps.ids(); len(ids) == 1 {
			idpID = ids[0]
		} else {
			s.chooseIdP(w, r, ids, test)
			return
		}
	}
	entry, ok := s.idps.get(idpID)
	if !ok {
		s.writeError(w, r, apiForm, fault.Coded(fault.NotFound, "unknown_idp", "no such identity provider"))
		return
	}
	rp, err := entry.relyingParty(r.Context(), s)
	if err != nil {
		s.loginFailed(w, r, idpID, &fault.Error{Kind: fault.Upstream, Code: "idp_unavailable", Message: idpProblem(entry.cfg, err), Err: err})
		return
	}
	now := s.now()
	txn := loginTxn{
		ID: randomToken(16), IdP: idpID, State: randomToken(32), Nonce: randomToken(32),
		Redirect: s.redirects.Target(q.Get("redirect_url")), Test: test,
		Expires: now.Add(s.cfg.LoginTimeout.D()).Unix(),
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(txn.Nonce)}
	if rp.idp.Config.PKCEEnabled {
		txn.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(txn.Verifier))
	}
	name := s.txnCookieName(txn.State)
	sealed, err := s.keys.keys().seal(txn, name)
	if err != nil {
		s.writeError(w, r, apiForm, fault.Wrap(fault.Internal, err, "internal error"))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: sealed, Path: "/", MaxAge: int(s.cfg.LoginTimeout.D().Seconds()),
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, rp.oauth.AuthCodeURL(txn.State, opts...), http.StatusFound)
}

// chooserPage lists the IdPs for a browser that reached /login without idp_id.
var chooserPage = template.Must(template.New("choose").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><title>Sign in</title></head>
<body><h1>Sign in with</h1><ul>
{{range .}}<li><a href="{{.URL}}">{{.Name}}</a></li>
{{else}}<li>No identity provider is configured.</li>
{{end}}</ul></body></html>
`))

// chooseIdP answers /login without idp_id when several IdPs exist: a page of links for browsers,
// a JSON list otherwise.
func (s *server) chooseIdP(w http.ResponseWriter, r *http.Request, ids []string, test bool) {
	path := "/login"
	if test {
		path = "/test"
	}
	target := s.redirects.Target(r.URL.Query().Get("redirect_url"))
	type choice struct{ ID, Name, URL string }
	var choices []choice
	for _, id := range ids {
		e, ok := s.idps.get(id)
		if !ok {
			continue
		}
		q := url.Values{"idp_id": {id}}
		if target != "/" {
			q.Set("redirect_url", target)
		}
		name := e.cfg.Name
		if name == "" {
			name = id
		}
		choices = append(choices, choice{ID: id, Name: name, URL: s.issuer + path + "?" + q.Encode()})
	}
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "idp_required",
			"error_description": "choose an identity provider with ?idp_id=", "idp_ids": ids})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	_ = chooserPage.Execute(w, choices)
}

// txnCookieName gives each login transaction its own cookie (so logins in several tabs do not
// overwrite each other), named by a hash of its state: the callback finds it from the state alone.
func (s *server) txnCookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return s.loginPrefix + base64.RawURLEncoding.EncodeToString(sum[:9])
}

func (s *server) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

// handleCallback finishes a login: it checks the transaction, exchanges the code (with the PKCE
// verifier), verifies the ID token with the transaction's IdP, applies the lock, and mints a session.
func (s *server) handleCallback(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(state) > 256 {
		s.loginFailed(w, r, "", refusal(fault.Invalid, "missing_state", nil))
		return
	}
	name := s.txnCookieName(state)
	c, err := r.Cookie(name)
	// The transaction is single-use: whatever happens next, the browser forgets it.
	s.clearCookie(w, name)
	if err != nil {
		s.loginFailed(w, r, "", refusal(fault.Invalid, "no_login_transaction", nil))
		return
	}
	var txn loginTxn
	if err := s.keys.keys().open(c.Value, name, &txn); err != nil {
		s.loginFailed(w, r, "", refusal(fault.Invalid, "bad_login_transaction", nil))
		return
	}
	now := s.now()
	switch {
	case !constantTimeEqual(txn.State, state):
		s.loginFailed(w, r, txn.IdP, refusal(fault.Invalid, "state_mismatch", nil))
		return
	case now.Unix() > txn.Expires:
		s.loginFailed(w, r, txn.IdP, refusal(fault.Invalid, "login_expired", nil))
		return
	}
	// Mark the transaction used on every replica before looking at the response: a replayed
	// code+state (with a copied cookie) is refused even if the first use failed.
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	_, err = s.txnKV.Create(ctx, txn.ID, nil)
	cancel()
	if errors.Is(err, jetstream.ErrKeyExists) {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Invalid, "login_replayed", nil))
		return
	}
	if err != nil {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Unavailable, "txn_store_unavailable", err))
		return
	}
	// Every SCIM write of this IdP acknowledged before now must shape the session (read-your-writes
	// end to end; catchup.go): ask scim-ingest and identity-store while the code is exchanged.
	var barrier <-chan barrierResult
	if e, ok := s.idps.get(txn.IdP); ok && e.cfg.SCIMConfig.Enabled && !s.cfg.noSCIMBarrier {
		barrier = s.startSCIMBarrier(r.Context(), txn.IdP)
	}
	// What the IDENTITY stream holds as the callback begins: the session is built only once this
	// replica's projection has applied it (read-your-writes; see catchup.go).
	head, err := s.identityHead(r.Context())
	if err != nil {
		s.catchUpFailed(w, r, txn.IdP, "unavailable", err)
		return
	}
	entry, ok := s.idps.get(txn.IdP)
	if !ok {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Invalid, "unknown_idp", nil))
		return
	}
	rp, err := entry.relyingParty(r.Context(), s)
	if err != nil {
		s.loginFailed(w, r, txn.IdP, &fault.Error{Kind: fault.Upstream, Code: "idp_unavailable", Message: idpProblem(entry.cfg, err), Err: err})
		return
	}
	if e := q.Get("error"); e != "" {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Forbidden, "idp_error", fmt.Errorf("idp error %q", e)))
		return
	}
	// Mix-up defence (RFC 9207): the response's iss, when sent or promised, names this transaction's IdP.
	issParam, hasIss := q["iss"]
	if hasIss || rp.issParam {
		if !hasIss || len(issParam) != 1 || !rp.issuerAllowed(issParam[0]) {
			s.loginFailed(w, r, txn.IdP, refusal(fault.Invalid, "issuer_mismatch", nil))
			return
		}
	}
	code := q.Get("code")
	if code == "" {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Invalid, "missing_code", nil))
		return
	}
	claims, sub, lerr := s.exchange(r.Context(), rp, txn, code, now)
	if lerr == nil && hasIss && claims["iss"] != issParam[0] {
		// Without a configured issuer the host rule admits several; the response and the token
		// must still agree.
		lerr = deny("issuer_mismatch", "iss parameter differs from the ID token's iss")
	}
	if lerr != nil {
		var fe *fault.Error // a denial (deny) names its reason; anything else is the IdP failing
		if !errors.As(lerr, &fe) {
			fe = refusal(fault.Upstream, "error", lerr)
		}
		s.loginFailed(w, r, txn.IdP, fe)
		return
	}
	if barrier != nil {
		res := <-barrier
		if res.err != nil {
			s.catchUpFailed(w, r, txn.IdP, res.cause, res.err)
			return
		}
		head = max(head, res.seq)
	}
	s.completeLogin(w, r, rp, txn, claims, sub, now, head)
}

// exchange redeems the code and returns the checked ID-token claims merged with userinfo.
func (s *server) exchange(ctx context.Context, rp *relyingParty, txn loginTxn, code string, now time.Time) (map[string]any, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.idpClient)
	var opts []oauth2.AuthCodeOption
	if txn.Verifier != "" {
		opts = append(opts, oauth2.VerifierOption(txn.Verifier))
	}
	tok, err := rp.oauth.Exchange(ctx, code, opts...)
	if err != nil {
		return nil, "", deny("token_exchange_failed", "%v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, "", deny("no_id_token", "token response without id_token")
	}
	idt, err := rp.verifyIDToken(ctx, raw, txn.Nonce, tok.AccessToken, now, s.cfg.ClockSkew.D())
	if err != nil {
		return nil, "", err
	}
	claims := idt.claims
	if rp.provider != nil {
		// Userinfo only adds claims the ID token lacks. If the IdP will not answer it (some need
		// extra scopes), the ID token alone decides; if it answers, it must be about the same user.
		ui, err := rp.provider.UserInfo(oidc.ClientContext(ctx, s.idpClient), oauth2.StaticTokenSource(tok))
		if err != nil {
			s.log.Warn("userinfo unavailable; using the ID token's claims only", "idp_id", rp.idp.ID, "err", err)
			return claims, idt.sub, nil
		}
		if ui.Subject != idt.sub {
			return nil, "", deny("userinfo_sub_mismatch", "userinfo sub differs from the ID token's")
		}
		var extra map[string]any
		if err := ui.Claims(&extra); err == nil {
			for k, v := range extra {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	return claims, idt.sub, nil
}

// loginIdentity is what a login resolved: the registry id and the identity the session carries.
type loginIdentity struct {
	userID     string
	email      string
	name       string
	groups     []events.Group
	claimGroup []string
	fields     map[string]any
}

func (s *server) resolveIdentity(rp *relyingParty, claims map[string]any) (loginIdentity, error) {
	email, _ := claims[rp.emailClaim].(string)
	email = person.NormalizeEmail(email)
	if email == "" {
		return loginIdentity{}, deny("no_email", "claim %q missing or empty", rp.emailClaim)
	}
	// A control, format or zero-width character would reach X-Scimflow-Email and the logs, or make
	// two addresses look alike (docs/security.md, finding 8): refused, never cleaned up.
	if err := person.CheckEmail(email); err != nil {
		return loginIdentity{}, deny("invalid_email", "claim %q: %v", rp.emailClaim, err)
	}
	// An email the IdP says is unverified is not used to identify anyone (O21). Absent means the IdP
	// does not say (Entra ID); anything but the JSON boolean true when present is "unverified".
	if rp.emailClaim == "email" {
		if v, has := claims["email_verified"]; has {
			if b, ok := v.(bool); !ok || !b {
				return loginIdentity{}, deny("email_unverified", "email_verified is %v", v)
			}
		}
	}
	li := loginIdentity{email: email}
	li.name, _ = claims["name"].(string)
	if id, ok := s.state.userIDByEmail(rp.idp.ID, email); ok {
		li.userID = id
	} else {
		li.userID = events.UserID(rp.idp.ID, email)
	}
	li.claimGroup = groupsClaim(claims)
	// SCIM membership replaces the token's groups claim once SCIM has told scimflow about the person
	// (docs/design.md §4): a live SCIM resource links to them, even with no groups. A login then reads
	// the latest SCIM state — the identity's current SCIM groups, not its registry groups, which in
	// reauth and no_action modes still hold what the previous login read. Until SCIM links the
	// person, and again after SCIM deletes them, the claim applies, as with SCIM off.
	scimKnows := false
	if rp.idp.SCIMConfig.Enabled {
		if u, ok := s.state.user(li.userID); ok && u.Identity != nil && scimLinked(u.Identity) {
			scimKnows = true
			li.groups = slices.Clone(u.Identity.SCIMGroups)
		}
	}
	if !scimKnows {
		for _, g := range li.claimGroup {
			li.groups = append(li.groups, events.Group{ID: g, Name: g})
		}
	}
	if len(rp.fieldClaims) > 0 {
		li.fields = map[string]any{}
		for _, name := range rp.fieldClaims {
			if v, ok := claims[name]; ok {
				li.fields[name] = v
			}
		}
	}
	return li, nil
}

// scimLinked reports whether a live SCIM resource links to the identity. Snapshots published before
// scim_linked existed say so only through their SCIM groups.
func scimLinked(id *events.Identity) bool {
	return id.SCIMLinked || len(id.SCIMGroups) > 0
}

// completeLogin applies the lock, then either shows the identity (/test) or mints the session and
// records the LoggedIn event with it in one transaction.
func (s *server) completeLogin(w http.ResponseWriter, r *http.Request, rp *relyingParty, txn loginTxn, claims map[string]any, sub string, now time.Time, head uint64) {
	// Everything below reads the IDENTITY projection (registry id, lock, SCIM groups): first let it
	// apply what the stream held when the callback began.
	if err := s.awaitIdentity(r.Context(), head); err != nil {
		reason := "unavailable"
		if errors.Is(err, errCatchUpTimeout) {
			reason = "timeout"
		}
		s.catchUpFailed(w, r, txn.IdP, reason, err)
		return
	}
	// The cursor is read before the projection: the session reads every event up to it, perhaps a
	// few later ones. Any event above it counts as newer than the session — a snapshot is re-read
	// (harmless), a revocation or lock is honoured (fail closed). See projection.go, Ordering.
	idSeq := s.identityRn.Cursor()
	li, err := s.resolveIdentity(rp, claims)
	if err != nil {
		fe := fault.From(err) // a denial (deny) whose Code is the reason
		s.recordDenied(rp.idp.ID, li.userID, "", sub, fe.Code)
		s.loginFailed(w, r, txn.IdP, fe)
		return
	}
	// The lock is read now, at the callback, not at /login: a deprovision that lands during the
	// login still stops it (R3). A stale projection cannot tell, so the login fails closed.
	if err := s.staleness(); err != nil {
		s.metrics.failClosed.WithLabelValues("callback").Inc()
		s.loginFailed(w, r, txn.IdP, refusal(fault.Unavailable, "fail_closed", nil))
		return
	}
	if u, ok := s.state.user(li.userID); ok && s.state.locked(u) {
		s.recordDenied(rp.idp.ID, li.userID, li.email, sub, "locked")
		s.loginFailed(w, r, txn.IdP, refusal(fault.Forbidden, "locked", nil))
		return
	}
	// The person is bound to the OIDC sub of their first login (identity-store decides, from the
	// AUTH stream, and publishes sub_bound): another account at the IdP that presents the same
	// verified email is not that person (docs/security.md, finding 9). A login racing the first one on
	// another replica, before the binding reached this one, is revoked by identity-store instead.
	if bound := s.state.boundSub(li.userID, rp.idp.ID); bound != "" && bound != sub {
		s.recordDenied(rp.idp.ID, li.userID, li.email, sub, events.ReasonSubMismatch)
		s.loginFailed(w, r, txn.IdP, refusal(fault.Forbidden, events.ReasonSubMismatch, nil))
		return
	}
	if txn.Test {
		s.metrics.logins.WithLabelValues(txn.IdP, "success", "test").Inc()
		writeJSON(w, http.StatusOK, map[string]any{
			"email": li.email, "user_uuid": li.userID, "name": li.name, "sub": sub,
			"idp":    idpRef{ID: rp.idp.ID, Type: "oidc"},
			"groups": nonNilGroups(li.groups), "oidc_fields": li.fields, "claims": claims,
		})
		return
	}
	sid := newSessionID()
	exp := now.Add(s.cfg.SessionTTL.D())
	sc := sessionClaims{
		Issuer: s.issuer, Audience: sessionAudience, Type: typSession, Subject: li.userID, SID: sid, IdP: rp.idp.ID,
		OIDCSub: sub, Email: li.email, Name: li.name, Groups: li.groups, OIDCFields: li.fields,
		IssuedAt: now.Unix(), IssuedNano: now.UnixNano(), Expiry: exp.Unix(), IdentitySeq: &idSeq,
	}
	tok, err := s.keys.keys().sign(sc)
	if err == nil && len(tok) > 3800 {
		// Too big for a cookie: drop the bulky parts; /verify then relies on the registry snapshot.
		sc.Groups, sc.OIDCFields, sc.Trimmed = nil, nil, true
		tok, err = s.keys.keys().sign(sc)
	}
	if err != nil {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Internal, "error", err))
		return
	}
	// The claim always travels: identity-store decides, as this login did, whether SCIM knows the
	// person (and then ignores it).
	ev := events.New(rp.idp.ID, now, txn.ID, "", events.LoggedIn{
		UserID: li.userID, Email: li.email, Sub: sub, Name: li.name, Groups: li.claimGroup, OIDCFields: li.fields,
		SessionIDHash: hashSID(sid), SCIMEnabled: rp.idp.SCIMConfig.Enabled, IssuedAt: now, ExpiresAt: exp,
	})
	evs := []events.Event{ev}
	// Session fixation (R9): a session this browser held before logging in again ends now.
	var old *sessionClaims
	if oc, err := r.Cookie(s.sessionName); err == nil {
		if prev, _, err := s.verifySession(r.Context(), oc.Value, now); err == nil {
			old = prev
			evs = append(evs, events.New(prev.IdP, now, txn.ID, ev.ID, events.LoggedOut{
				UserID: prev.Subject, Email: prev.Email, SessionIDHash: hashSID(prev.SID), ExpiresAt: prev.expires()}))
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if old != nil {
			h, exp := hashSID(old.SID), old.expires()
			if err := putLoggedOut(tx, h, exp); err != nil {
				return err
			}
			tx.OnCommit(func() { s.state.putLoggedOut(h, exp) })
		}
		return outbox.Append(tx, now, evs...)
	}); err != nil {
		s.loginFailed(w, r, txn.IdP, refusal(fault.Internal, "error", err))
		return
	}
	s.relay.Notify()
	s.metrics.logins.WithLabelValues(txn.IdP, "success", "").Inc()
	s.metrics.sessions.WithLabelValues(txn.IdP).Inc()
	s.setSessionCookie(w, tok, exp, now)
	http.Redirect(w, r, txn.Redirect, http.StatusFound)
}

func nonNilGroups(gs []events.Group) []events.Group {
	if gs == nil {
		return []events.Group{}
	}
	return gs
}

func (s *server) setSessionCookie(w http.ResponseWriter, tok string, exp, now time.Time) {
	http.SetCookie(w, &http.Cookie{Name: s.sessionName, Value: tok, Path: "/", Domain: s.cookieDom, MaxAge: int(exp.Sub(now).Seconds()),
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

func (s *server) clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: s.sessionName, Value: "", Path: "/", Domain: s.cookieDom, MaxAge: -1,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

// recordDenied publishes a login_denied event for a login the IdP allowed but auth refused.
func (s *server) recordDenied(idp, userID, email, sub, reason string) {
	if userID == "" {
		if email == "" {
			return // nothing identifies the user; the metric and the log record it
		}
		userID = events.UserID(idp, email)
	}
	now := s.now()
	ev := events.New(idp, now, "", "", events.LoginDenied{UserID: userID, Email: email, Sub: sub, Reason: reason})
	if err := s.db.Update(func(tx *bolt.Tx) error { return outbox.Append(tx, now, ev) }); err != nil {
		s.log.Error("record login_denied", "err", err)
		return
	}
	s.relay.Notify()
}

// catchUpFailed refuses a login whose identity state could not be brought up to date (fail closed):
// a 503 with Retry-After that the user can simply retry (reason identity_catching_up, as every login
// failure answers), counted by cause (timeout, unavailable).
func (s *server) catchUpFailed(w http.ResponseWriter, r *http.Request, idp, cause string, err error) {
	s.metrics.catchUpRefused.WithLabelValues(cause).Inc()
	s.loginFailed(w, r, idp, &fault.Error{Kind: fault.Unavailable, Code: "identity_catching_up", RetryAfter: time.Second,
		Err: fmt.Errorf("%s: %w", cause, err)})
}

// idpProblem is what the login error page (and /test) says about an IdP whose relying party could
// not be built: the reason itself for a configuration that cannot work, which the admin trying the
// IdP needs to see, and only the discovery URL for a network failure (whose details stay in the log).
func idpProblem(cfg events.IdP, err error) string {
	var ce *configError
	if errors.As(err, &ce) {
		return "The identity provider's configuration cannot work: " + ce.Error()
	}
	return fmt.Sprintf("The identity provider could not be reached (discovery at %s); retry later.", cfg.Config.Issuer)
}

// refusal is a refused or failed login: the reason (Code) is what metrics, events and the caller see;
// cause, when not nil, goes to the log only.
func refusal(k fault.Kind, reason string, cause error) *fault.Error {
	return &fault.Error{Kind: k, Code: reason, Err: cause}
}

// loginFailed answers a refused or failed login (a fault whose Code is the reason and whose Message,
// when set, is a sentence about this failure for the user or admin) and counts it.
func (s *server) loginFailed(w http.ResponseWriter, r *http.Request, idp string, fe *fault.Error) {
	result := "denied"
	if fe.Kind.Status() >= 500 {
		result = "error"
	}
	if idp == "" {
		idp = "unknown"
	}
	s.metrics.logins.WithLabelValues(idp, result, fe.Code).Inc()
	if fe.Err != nil {
		s.log.Warn("login refused", "idp_id", idp, "reason", fe.Code, "err", fe.Err, "request_id", httpserv.RequestIDFrom(r.Context()))
	}
	s.writeError(w, r, loginForm, fe)
}

// handleLogout ends the session on every replica: it is recorded here at once (with the LoggedOut
// event in the same transaction) and reaches the other replicas through the AUTH stream.
//
// Logging out changes state, so a request the browser marks as coming from another site (a link, an
// image or a form there) is not obeyed: it gets a page whose button posts the logout from auth's own
// origin (docs/security.md, finding 7). redirect_url is read from the query or the form and validated as
// always.
func (s *server) handleLogout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	target := r.FormValue("redirect_url")
	if s.crossSite(r) {
		s.metrics.logoutRefused.Inc()
		redirect := ""
		if target != "" {
			redirect = s.redirects.Target(target)
		}
		writePage(w, http.StatusForbidden, logoutPage, struct{ Action, Redirect string }{s.issuer + "/logout", redirect})
		return
	}
	now := s.now()
	if c, err := r.Cookie(s.sessionName); err == nil {
		// Signature and expiry only: a revoked session may still log out.
		if sc, _, err := s.verifySession(r.Context(), c.Value, now); err == nil {
			h, exp := hashSID(sc.SID), sc.expires()
			ev := events.New(sc.IdP, now, "", "", events.LoggedOut{UserID: sc.Subject, Email: sc.Email, SessionIDHash: h, ExpiresAt: exp})
			if err := s.db.Update(func(tx *bolt.Tx) error {
				if err := putLoggedOut(tx, h, exp); err != nil {
					return err
				}
				tx.OnCommit(func() { s.state.putLoggedOut(h, exp) })
				return outbox.Append(tx, now, ev)
			}); err != nil {
				s.writeError(w, r, apiForm, fault.Wrap(fault.Internal, err, "logout failed"))
				return
			}
			s.relay.Notify()
			s.cache.drop(c.Value)
		}
	}
	s.clearSessionCookie(w)
	if target != "" {
		http.Redirect(w, r, s.redirects.Target(target), http.StatusFound)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged_out"})
}

// crossSite reports a request the browser says comes from another site: Sec-Fetch-Site
// "cross-site", or (browsers without Fetch Metadata, which is only sent to https and localhost) an
// Origin that is neither auth's own, an allow-listed redirect origin, nor under cookie_domain. A
// request that carries neither header (a typed URL, an old client, curl) cannot be told apart and
// is obeyed, as before.
func (s *server) crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site":
		return true
	case "same-origin", "same-site", "none":
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return true // "null" (sandboxed frames, data: URLs, some redirects) or garbage
	}
	if s.redirects.allowed[originOf(u)] {
		return false
	}
	host := strings.ToLower(u.Hostname())
	return s.cookieDom == "" || !(host == s.cookieDom || strings.HasSuffix(host, "."+s.cookieDom))
}

// handleCerts publishes the JWKS of auth's signing keys (current and previous).
func (s *server) handleCerts(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	_ = json.NewEncoder(w).Encode(s.keys.keys().jwks())
}

// getIdentityResponse is /get-identity's body, with Cloudflare's field names.
type getIdentityResponse struct {
	ID         string         `json:"id"`
	Email      string         `json:"email"`
	Name       string         `json:"name,omitempty"`
	UserUUID   string         `json:"user_uuid"`
	IdP        idpRef         `json:"idp"`
	Groups     []events.Group `json:"groups"`
	OIDCFields map[string]any `json:"oidc_fields,omitempty"`
	IAT        int64          `json:"iat"`
	Exp        int64          `json:"exp"`
	IP         string         `json:"ip,omitempty"`
	Version    int            `json:"version"`
}

// handleGetIdentity returns the identity behind the session cookie.
func (s *server) handleGetIdentity(w http.ResponseWriter, r *http.Request) {
	cs, res, why := s.session(r.Context(), r, s.now())
	switch res {
	case sessionValid:
	case sessionStale:
		s.metrics.failClosed.WithLabelValues("get_identity").Inc()
		s.writeError(w, r, apiForm, fault.E(fault.Unavailable, "revocation state unavailable"))
		return
	default:
		s.writeError(w, r, apiForm, fault.Coded(fault.Unauthorized, "unauthenticated", "%s", why))
		return
	}
	id := s.identityOf(cs.claims)
	writeJSON(w, http.StatusOK, getIdentityResponse{
		ID: id.UserID, Email: id.Email, Name: id.Name, UserUUID: id.UserID, IdP: idpRef{ID: id.IdP, Type: "oidc"},
		Groups: nonNilGroups(id.Groups), OIDCFields: id.OIDCFields, IAT: cs.claims.IssuedAt, Exp: cs.claims.Expiry,
		IP: r.Header.Get("X-Forwarded-For"), Version: 2,
	})
}

// handleIndex is where a login with no (or a refused) redirect target lands.
func (s *server) handleIndex(w http.ResponseWriter, r *http.Request) {
	_, res, _ := s.session(r.Context(), r, s.now())
	status := "signed_out"
	if res == sessionValid {
		status = "signed_in"
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
}
