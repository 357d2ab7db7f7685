package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Admin is a client of identity-store's admin API (docs/design.md §5), authenticated with the admin token.
type Admin struct {
	// BaseURL is the admin listener, e.g. "http://127.0.0.1:8081".
	BaseURL string
	// Token is the admin bearer token.
	Token string
	// HTTP is the client used; nil means a client with a 10 s timeout.
	HTTP *http.Client
}

// APIError is a non-2xx answer of the admin API, kept whole so callers can show it.
type APIError struct {
	Method, Path string
	Status       int
	Body         string
}

// Error implements error with the method, path, status and body.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s = %d: %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// IdPSpec is the create body of an identity provider: an OIDC client plus the SCIM policy.
type IdPSpec struct {
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	Config     OIDCConfig `json:"config"`
	SCIMConfig SCIMConfig `json:"scim_config"`
}

// OIDCConfig is an IdP's OpenID Connect client configuration (Cloudflare's field names).
type OIDCConfig struct {
	ClientID       string   `json:"client_id"`
	ClientSecret   string   `json:"client_secret,omitempty"`
	AuthURL        string   `json:"auth_url,omitempty"`
	TokenURL       string   `json:"token_url,omitempty"`
	CertsURL       string   `json:"certs_url,omitempty"`
	Issuer         string   `json:"issuer,omitempty"`
	PKCEEnabled    bool     `json:"pkce_enabled"`
	EmailClaimName string   `json:"email_claim_name,omitempty"`
	Claims         []string `json:"claims,omitempty"`
	Scopes         []string `json:"scopes,omitempty"`
}

// SCIMConfig is an IdP's SCIM policy (docs/design.md §4). Secret and SCIMBaseURL are only read.
type SCIMConfig struct {
	Enabled                bool   `json:"enabled"`
	UserDeprovision        bool   `json:"user_deprovision"`
	SeatDeprovision        bool   `json:"seat_deprovision"`
	IdentityUpdateBehavior string `json:"identity_update_behavior"`
	Secret                 string `json:"secret,omitempty"`
	SCIMBaseURL            string `json:"scim_base_url,omitempty"`
}

// IdP is an identity provider as the admin API returns it.
type IdP struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	Config     OIDCConfig `json:"config"`
	SCIMConfig SCIMConfig `json:"scim_config"`
}

// Group is a group of a registry identity or of a session.
type Group struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Identity is the registry identity of a user.
type Identity struct {
	UserID        string         `json:"user_id"`
	Email         string         `json:"email"`
	Name          string         `json:"name"`
	Groups        []Group        `json:"groups"`
	OIDCFields    map[string]any `json:"oidc_fields"`
	Status        string         `json:"status"`
	SeatHeld      bool           `json:"seat_held"`
	Locked        bool           `json:"locked"`
	RevokedBefore *time.Time     `json:"revoked_before"`
	SCIMUserID    string         `json:"scim_user_id"`
}

// UserSummary is a row of GET /api/v1/users.
type UserSummary struct {
	ID         string `json:"id"`
	IdPID      string `json:"idp_id"`
	Email      string `json:"email"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	SeatHeld   bool   `json:"seat_held"`
	Locked     bool   `json:"locked"`
	SCIMUserID string `json:"scim_user_id"`
}

// Session is one of a user's active sessions.
type Session struct {
	SessionIDHash string    `json:"session_id_hash"`
	IssuedAt      time.Time `json:"issued_at"`
	ExpiresAt     time.Time `json:"expires_at"`
}

// HistoryEntry is one change of a user's registry identity, with its cause (correlation id).
type HistoryEntry struct {
	At        time.Time `json:"at"`
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Cause     string    `json:"cause"`
	Changes   []string  `json:"changes"`
	Notes     []string  `json:"notes"`
	After     Identity  `json:"after"`
}

// User is GET /api/v1/users/{id}: summary, registry identity, seat, sessions and history (newest first).
type User struct {
	UserSummary
	Identity       Identity       `json:"identity"`
	Seat           Seat           `json:"seat"`
	RevokedBefore  *time.Time     `json:"revoked_before"`
	ActiveSessions []Session      `json:"active_sessions"`
	History        []HistoryEntry `json:"history"`
	// OIDCSub is the OIDC sub bound to the person (the sub of their first login); empty when no
	// binding holds.
	OIDCSub string `json:"oidc_sub"`
	// IdentityAt is the identity at the time asked for with UserAt.
	IdentityAt *Identity `json:"identity_at"`
}

// Seat is a user's seat: held since TakenAt, or removed at RemovedAt.
type Seat struct {
	Held      bool      `json:"held"`
	TakenAt   time.Time `json:"taken_at"`
	RemovedAt time.Time `json:"removed_at"`
}

// GroupNames returns the names of the identity's groups, in order.
func (i Identity) GroupNames() []string { return groupNames(i.Groups) }

func groupNames(gs []Group) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

// LogRow is a SCIM provisioning-log row (GET /api/v1/logs/scim), in Cloudflare's field names.
type LogRow struct {
	ID                string    `json:"id"`
	IdPID             string    `json:"idp_id"`
	LoggedAt          time.Time `json:"logged_at"`
	RequestID         string    `json:"request_id"`
	RequestMethod     string    `json:"request_method"`
	ResourceType      string    `json:"resource_type"`
	CFResourceID      string    `json:"cf_resource_id"`
	IdPResourceID     string    `json:"idp_resource_id"`
	ResourceUserEmail string    `json:"resource_user_email"`
	ResourceGroupName string    `json:"resource_group_name"`
	Status            string    `json:"status"`
	HTTPStatus        int       `json:"http_status"`
	ErrorDescription  string    `json:"error_description"`
	RequestBody       string    `json:"request_body"`
}

func (a *Admin) client() *http.Client {
	if a.HTTP != nil {
		return a.HTTP
	}
	return defaultClient
}

var defaultClient = &http.Client{Timeout: 10 * time.Second}

// do sends a request and decodes the envelope's result into out (nil: ignored).
func (a *Admin) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out == nil {
		return nil
	}
	var env struct {
		Success bool            `json:"success"`
		Result  json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, path, err)
	}
	if err := json.Unmarshal(env.Result, out); err != nil {
		return fmt.Errorf("%s %s: decode result: %w", method, path, err)
	}
	return nil
}

// CreateIdP creates an identity provider; the result carries the SCIM secret (shown only now).
func (a *Admin) CreateIdP(ctx context.Context, spec IdPSpec) (IdP, error) {
	if spec.Type == "" {
		spec.Type = "oidc"
	}
	var p IdP
	err := a.do(ctx, http.MethodPost, "/api/v1/identity_providers", spec, &p)
	return p, err
}

// GetIdP returns an identity provider (secrets redacted).
func (a *Admin) GetIdP(ctx context.Context, id string) (IdP, error) {
	var p IdP
	err := a.do(ctx, http.MethodGet, "/api/v1/identity_providers/"+url.PathEscape(id), nil, &p)
	return p, err
}

// Users lists users, filtered by email and/or IdP (empty: no filter).
func (a *Admin) Users(ctx context.Context, email, idpID string) ([]UserSummary, error) {
	q := url.Values{}
	if email != "" {
		q.Set("email", email)
	}
	if idpID != "" {
		q.Set("idp_id", idpID)
	}
	q.Set("per_page", "1000")
	var out []UserSummary
	err := a.do(ctx, http.MethodGet, "/api/v1/users?"+q.Encode(), nil, &out)
	return out, err
}

// UserByEmail returns the registry user of idpID with email; found is false if there is none yet.
func (a *Admin) UserByEmail(ctx context.Context, idpID, email string) (u User, found bool, err error) {
	list, err := a.Users(ctx, email, idpID)
	if err != nil || len(list) == 0 {
		return User{}, false, err
	}
	u, err = a.User(ctx, list[0].ID)
	return u, err == nil, err
}

// User returns a user's registry identity, seat, status, active sessions and history.
func (a *Admin) User(ctx context.Context, id string) (User, error) {
	var u User
	err := a.do(ctx, http.MethodGet, "/api/v1/users/"+url.PathEscape(id), nil, &u)
	return u, err
}

// RevokeUser ends every session of a user (the seat is kept).
func (a *Admin) RevokeUser(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(id)+"/revoke", nil, nil)
}

// SCIMLogs returns provisioning-log rows matching q (idp_id, status, resource_type, request_method,
// resource_user_email, resource_group_name, since, until, limit), newest first.
func (a *Admin) SCIMLogs(ctx context.Context, q url.Values) ([]LogRow, error) {
	var out []LogRow
	err := a.do(ctx, http.MethodGet, "/api/v1/logs/scim?"+q.Encode(), nil, &out)
	return out, err
}

// RemoveSeat frees a user's seat and ends their sessions (they take a seat again at the next login).
func (a *Admin) RemoveSeat(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(id)+"/seat", nil, nil)
}

// UserAt returns the user with identity_at: the registry identity as it was at the given time
// (GET /api/v1/users/{id}?at=…).
func (a *Admin) UserAt(ctx context.Context, id string, at time.Time) (User, error) {
	var u User
	q := url.Values{"at": {at.UTC().Format(time.RFC3339Nano)}}
	err := a.do(ctx, http.MethodGet, "/api/v1/users/"+url.PathEscape(id)+"?"+q.Encode(), nil, &u)
	return u, err
}

// UpdateIdP replaces an identity provider's definition (PUT). A redacted or empty client secret
// keeps the stored one.
func (a *Admin) UpdateIdP(ctx context.Context, id string, spec IdPSpec) (IdP, error) {
	if spec.Type == "" {
		spec.Type = "oidc"
	}
	var p IdP
	err := a.do(ctx, http.MethodPut, "/api/v1/identity_providers/"+url.PathEscape(id), spec, &p)
	return p, err
}

// RefreshSCIMSecret issues a new SCIM secret for the IdP and returns the IdP with it.
func (a *Admin) RefreshSCIMSecret(ctx context.Context, id string) (IdP, error) {
	var p IdP
	err := a.do(ctx, http.MethodPost, "/api/v1/identity_providers/"+url.PathEscape(id)+"/refresh_scim_secret", nil, &p)
	return p, err
}

// DeleteIdP deletes an identity provider.
func (a *Admin) DeleteIdP(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, "/api/v1/identity_providers/"+url.PathEscape(id), nil, nil)
}

// UnlockUser lifts a user's lock (sessions from before the lock stay invalid).
func (a *Admin) UnlockUser(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(id)+"/unlock", nil, nil)
}

// ResetSub voids the user's OIDC sub binding: the next login binds its sub.
func (a *Admin) ResetSub(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(id)+"/sub", nil, nil)
}

// ResetSubBindings voids every OIDC sub binding of the IdP (its app registration was replaced).
func (a *Admin) ResetSubBindings(ctx context.Context, idpID string) error {
	return a.do(ctx, http.MethodPost, "/api/v1/identity_providers/"+url.PathEscape(idpID)+"/reset_sub_bindings", nil, nil)
}

// AccessApp is an access application as the admin API returns it (docs/access-policies.md); the
// policies are kept as JSON, since tests write them literally.
type AccessApp struct {
	ID              string            `json:"id,omitempty"`
	Name            string            `json:"name"`
	Domain          string            `json:"domain"`
	SessionDuration string            `json:"session_duration,omitempty"`
	AllowedIdPs     []string          `json:"allowed_idps,omitempty"`
	Policies        []json.RawMessage `json:"policies"`
}

// AccessTestResult is one person's decision from the policy tester.
type AccessTestResult struct {
	UserID   string `json:"user_id"`
	Email    string `json:"email"`
	Found    bool   `json:"found"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
}

// AccessTestReport is the policy tester's answer.
type AccessTestReport struct {
	Summary struct {
		Users, Allowed, Denied int
		ByReason               map[string]int `json:"by_reason"`
	} `json:"summary"`
	Users []AccessTestResult `json:"users"`
}

// AccessLogRow is one row of GET /api/v1/logs/access.
type AccessLogRow struct {
	AppID    string `json:"app_id"`
	Email    string `json:"email"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Host     string `json:"host"`
}

// CreateAccessApp creates an access application.
func (a *Admin) CreateAccessApp(ctx context.Context, app AccessApp) (AccessApp, error) {
	var out AccessApp
	err := a.do(ctx, http.MethodPost, "/api/v1/access/apps", app, &out)
	return out, err
}

// DeleteAccessApp deletes an access application.
func (a *Admin) DeleteAccessApp(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, "/api/v1/access/apps/"+url.PathEscape(id), nil, nil)
}

// TestAccessApp runs the policy tester on a saved app, for the listed emails (none: the whole
// registry, summary only).
func (a *Admin) TestAccessApp(ctx context.Context, id string, emails ...string) (AccessTestReport, error) {
	var out AccessTestReport
	err := a.do(ctx, http.MethodPost, "/api/v1/access/apps/"+url.PathEscape(id)+"/test", map[string]any{"emails": emails}, &out)
	return out, err
}

// AccessLogs queries the access log.
func (a *Admin) AccessLogs(ctx context.Context, q url.Values) ([]AccessLogRow, error) {
	var out []AccessLogRow
	err := a.do(ctx, http.MethodGet, "/api/v1/logs/access?"+q.Encode(), nil, &out)
	return out, err
}
