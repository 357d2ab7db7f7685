package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Dialect is the IdP whose requests a SCIM client imitates. The shapes are those of
// docs/idp/okta.md and docs/idp/entra-id.md: Okta and Microsoft Entra ID without the aadOptscim062020
// flag (§1), quirks included, because those are what a real deployment receives.
type Dialect string

// The dialects the SCIM client speaks.
const (
	// Okta: GET by userName before POST, PUT for profile updates, path-less PATCH replace of
	// active to deactivate, group PATCH with a path-less rename plus add / filtered remove.
	Okta Dialect = "okta"
	// Entra: enterprise-extension POST, PATCH with capitalised ops and string booleans
	// ("False"), member add with "$ref": null, member remove with a value list, DELETE.
	Entra Dialect = "entra"
	// EntraFlag: Entra with the aadOptscim062020 flag on the tenant URL (§1.3): lower-case ops,
	// JSON booleans, one path-less replace with dotted keys for attribute changes, member removal
	// by a members[value eq "…"] filter.
	EntraFlag Dialect = "entra-flag"
)

// SCIM is a SCIM 2.0 client of one IdP's endpoint (/populations/{idp_id}/scim/v2).
type SCIM struct {
	// BaseURL is the IdP's scim_base_url.
	BaseURL string
	// Secret is the IdP's SCIM bearer secret.
	Secret string
	// Dialect chooses the request shapes.
	Dialect Dialect
	// HTTP is the client used; nil means a client with a 10 s timeout.
	HTTP *http.Client
	// NoRetry makes Do return a 429 or 503 at once. By default Do retries them after Retry-After
	// (at most 30 s in all), as Okta and Entra do: scim-ingest's admission control answers bulk
	// writes 429 while the pipeline lags, which a loaded test machine reaches now and then.
	NoRetry bool
}

// SCIMUser is the client's copy of a user it provisions: what the IdP knows about it. ID is set
// by CreateUser from the server's answer.
type SCIMUser struct {
	ID         string
	UserName   string // also the work email
	GivenName  string
	FamilyName string
	ExternalID string
	Active     bool
}

// DisplayName is "Given Family".
func (u *SCIMUser) DisplayName() string { return strings.TrimSpace(u.GivenName + " " + u.FamilyName) }

// SCIMGroup is the client's copy of a group it provisions.
type SCIMGroup struct {
	ID          string
	DisplayName string
	ExternalID  string
}

// Result is the outcome of one SCIM request: the status, scimflow's request id (X-Request-Id: the
// correlation id of every event the request caused), the body and when the response arrived.
type Result struct {
	Method, Path string
	Status       int
	RequestID    string
	RetryAfter   string // the Retry-After header of a 429 or 503
	Body         []byte
	Sent, Done   time.Time
}

// Err returns an error unless the status is one of want (default: any 2xx).
func (r Result) Err(want ...int) error {
	ok := r.Status/100 == 2
	if len(want) > 0 {
		ok = false
		for _, w := range want {
			ok = ok || r.Status == w
		}
	}
	if ok {
		return nil
	}
	return fmt.Errorf("SCIM %s %s = %d (request %s): %s", r.Method, r.Path, r.Status, r.RequestID, bytes.TrimSpace(r.Body))
}

const (
	schemaUser       = "urn:ietf:params:scim:schemas:core:2.0:User"
	schemaEnterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	schemaGroup      = "urn:ietf:params:scim:schemas:core:2.0:Group"
	schemaPatch      = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
)

func (s *SCIM) client() *http.Client {
	if s.HTTP != nil {
		return s.HTTP
	}
	return defaultClient
}

// Do sends one request with the dialect's headers. body is JSON-encoded unless nil. A 429 or 503
// with Retry-After is retried (see NoRetry).
func (s *SCIM) Do(ctx context.Context, method, path string, body any) (Result, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return Result{}, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := s.do(ctx, method, path, b, body != nil)
		busy := res.Status == http.StatusTooManyRequests || res.Status == http.StatusServiceUnavailable
		if err != nil || !busy || s.NoRetry || res.RetryAfter == "" || time.Now().After(deadline) {
			return res, err
		}
		wait, _ := strconv.Atoi(strings.TrimSpace(res.RetryAfter))
		select {
		case <-time.After(time.Duration(max(wait, 1)) * time.Second):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

func (s *SCIM) do(ctx context.Context, method, path string, b []byte, hasBody bool) (Result, error) {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(b)
	}
	body := rd
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(s.BaseURL, "/")+path, body)
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.Secret)
	switch s.Dialect {
	case Okta:
		req.Header.Set("User-Agent", "Okta SCIM Client 1.0.0")
		req.Header.Set("Accept", "application/scim+json")
		if body != nil {
			req.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
		}
	default:
		// Entra has been seen sending plain application/json and no particular User-Agent.
		req.Header.Set("User-Agent", "Microsoft.Online.SCIM")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	res := Result{Method: method, Path: path, Sent: time.Now()}
	resp, err := s.client().Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	res.Body, err = io.ReadAll(resp.Body)
	res.Done = time.Now()
	res.Status = resp.StatusCode
	res.RequestID = resp.Header.Get("X-Request-Id")
	res.RetryAfter = resp.Header.Get("Retry-After")
	return res, err
}

func idOf(body []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	json.Unmarshal(body, &v)
	return v.ID
}

// Ready polls the endpoint's /ServiceProviderConfig until it answers 200: a new IdP's endpoint
// appears once scim-ingest has seen the idp_config change.
func (s *SCIM) Ready(ctx context.Context, timeout time.Duration) error {
	return Eventually(ctx, timeout, func() error {
		res, err := s.Do(ctx, http.MethodGet, "/ServiceProviderConfig", nil)
		if err != nil {
			return err
		}
		return res.Err(http.StatusOK)
	})
}

// FindUser looks a user up by userName as both IdPs do before creating one; it returns the id or "".
func (s *SCIM) FindUser(ctx context.Context, userName string) (string, Result, error) {
	q := url.Values{"filter": {fmt.Sprintf("userName eq %q", userName)}}
	if s.Dialect == Okta {
		q.Set("startIndex", "1")
		q.Set("count", "100")
	}
	res, err := s.Do(ctx, http.MethodGet, "/Users?"+q.Encode(), nil)
	if err != nil {
		return "", res, err
	}
	if err := res.Err(http.StatusOK); err != nil {
		return "", res, err
	}
	var lr struct {
		TotalResults int `json:"totalResults"`
		Resources    []struct {
			ID string `json:"id"`
		} `json:"Resources"`
	}
	if err := json.Unmarshal(res.Body, &lr); err != nil {
		return "", res, err
	}
	if len(lr.Resources) == 0 {
		return "", res, nil
	}
	return lr.Resources[0].ID, res, nil
}

func (s *SCIM) userBody(u *SCIMUser, withID bool) map[string]any {
	b := map[string]any{
		"schemas":  []string{schemaUser},
		"userName": u.UserName,
		"name":     map[string]any{"givenName": u.GivenName, "familyName": u.FamilyName},
		"active":   u.Active,
	}
	switch s.Dialect {
	case Okta:
		b["emails"] = []any{map[string]any{"primary": true, "value": u.UserName, "type": "work", "display": u.UserName}}
		b["displayName"] = u.DisplayName()
		b["groups"] = []any{}
		if withID {
			b["id"] = u.ID
			b["meta"] = map[string]any{"resourceType": "User"}
		} else {
			b["locale"] = "en-US"
			b["externalId"] = u.ExternalID
			b["password"] = "1mz050nq" // Okta sends one; scimflow must never keep it
		}
	default:
		b["schemas"] = []string{schemaUser, schemaEnterprise}
		b["externalId"] = u.ExternalID
		b["emails"] = []any{map[string]any{"primary": true, "type": "work", "value": u.UserName}}
		b["meta"] = map[string]any{"resourceType": "User"}
		b["name"] = map[string]any{"formatted": u.DisplayName(), "givenName": u.GivenName, "familyName": u.FamilyName}
		b["displayName"] = u.DisplayName()
		b["roles"] = []any{}
		b[schemaEnterprise] = map[string]any{"department": "Engineering"}
	}
	return b
}

// CreateUser provisions u as the dialect's IdP does: a lookup by userName, then POST /Users. It
// sets u.ID and returns the POST's result.
func (s *SCIM) CreateUser(ctx context.Context, u *SCIMUser) (Result, error) {
	if u.ExternalID == "" {
		u.ExternalID = "ext-" + u.UserName
	}
	if _, res, err := s.FindUser(ctx, u.UserName); err != nil {
		return res, err
	}
	res, err := s.Do(ctx, http.MethodPost, "/Users", s.userBody(u, false))
	if err != nil {
		return res, err
	}
	if err := res.Err(http.StatusCreated); err != nil {
		return res, err
	}
	u.ID = idOf(res.Body)
	if u.ID == "" {
		return res, fmt.Errorf("POST /Users: no id in %s", res.Body)
	}
	return res, nil
}

// Rename changes the user's given and family name: Okta PUTs the whole user, Entra PATCHes
// displayName and the two name parts with capitalised ops, one op per path.
func (s *SCIM) Rename(ctx context.Context, u *SCIMUser, given, family string) (Result, error) {
	u.GivenName, u.FamilyName = given, family
	var res Result
	var err error
	switch s.Dialect {
	case Okta:
		res, err = s.Do(ctx, http.MethodPut, "/Users/"+u.ID, s.userBody(u, true))
	case EntraFlag:
		res, err = s.Do(ctx, http.MethodPatch, "/Users/"+u.ID, map[string]any{
			"schemas": []string{schemaPatch},
			"Operations": []any{map[string]any{"op": "replace", "value": map[string]any{
				"displayName": u.DisplayName(), "name.givenName": given, "name.familyName": family}}}})
	default:
		res, err = s.Do(ctx, http.MethodPatch, "/Users/"+u.ID, map[string]any{
			"schemas": []string{schemaPatch},
			"Operations": []any{
				map[string]any{"op": "Replace", "path": "displayName", "value": u.DisplayName()},
				map[string]any{"op": "Replace", "path": "name.givenName", "value": given},
				map[string]any{"op": "Replace", "path": "name.familyName", "value": family},
			}})
	}
	if err != nil {
		return res, err
	}
	return res, res.Err()
}

// SetActive deactivates or reactivates the user: Okta with a path-less replace
// {"active": false}, Entra with {"op":"Replace","path":"active","value":"False"} (a string).
func (s *SCIM) SetActive(ctx context.Context, u *SCIMUser, active bool) (Result, error) {
	u.Active = active
	var op map[string]any
	switch s.Dialect {
	case Okta:
		op = map[string]any{"op": "replace", "value": map[string]any{"active": active}}
	case EntraFlag:
		op = map[string]any{"op": "replace", "path": "active", "value": active}
	default:
		v := "False"
		if active {
			v = "True"
		}
		op = map[string]any{"op": "Replace", "path": "active", "value": v}
	}
	res, err := s.Do(ctx, http.MethodPatch, "/Users/"+u.ID, map[string]any{"schemas": []string{schemaPatch}, "Operations": []any{op}})
	if err != nil {
		return res, err
	}
	return res, res.Err()
}

// DeleteUser deletes the user (Entra's hard delete; Okta never sends it, JumpCloud does).
func (s *SCIM) DeleteUser(ctx context.Context, u *SCIMUser) (Result, error) {
	res, err := s.Do(ctx, http.MethodDelete, "/Users/"+u.ID, nil)
	if err != nil {
		return res, err
	}
	return res, res.Err(http.StatusNoContent)
}

// CreateGroup provisions an empty group as the dialect does (Okta with "members": [], Entra with
// its externalId and ADSCIM schema) and sets g.ID.
func (s *SCIM) CreateGroup(ctx context.Context, g *SCIMGroup) (Result, error) {
	body := map[string]any{"schemas": []string{schemaGroup}, "displayName": g.DisplayName}
	if s.Dialect == Okta {
		body["members"] = []any{}
	} else {
		if g.ExternalID == "" {
			g.ExternalID = "ext-" + g.DisplayName
		}
		body["schemas"] = []string{schemaGroup, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"}
		body["externalId"] = g.ExternalID
		body["meta"] = map[string]any{"resourceType": "Group"}
		q := url.Values{"filter": {fmt.Sprintf("displayName eq %q", g.DisplayName)}, "excludedAttributes": {"members"}}
		if res, err := s.Do(ctx, http.MethodGet, "/Groups?"+q.Encode(), nil); err != nil || res.Err(http.StatusOK) != nil {
			if err == nil {
				err = res.Err(http.StatusOK)
			}
			return res, err
		}
	}
	res, err := s.Do(ctx, http.MethodPost, "/Groups", body)
	if err != nil {
		return res, err
	}
	if err := res.Err(http.StatusCreated); err != nil {
		return res, err
	}
	g.ID = idOf(res.Body)
	return res, nil
}

// AddMembers adds users to g in one PATCH: Okta's path-less rename (sent with every membership
// update) plus an add; Entra's Add with "$ref": null.
func (s *SCIM) AddMembers(ctx context.Context, g *SCIMGroup, users ...*SCIMUser) (Result, error) {
	var vals []any
	var ops []any
	switch s.Dialect {
	case Okta:
		for _, u := range users {
			vals = append(vals, map[string]any{"value": u.ID, "display": u.UserName})
		}
		ops = []any{
			map[string]any{"op": "replace", "value": map[string]any{"id": g.ID, "displayName": g.DisplayName}},
			map[string]any{"op": "add", "path": "members", "value": vals},
		}
	case EntraFlag:
		for _, u := range users {
			vals = append(vals, map[string]any{"value": u.ID})
		}
		ops = []any{map[string]any{"op": "add", "path": "members", "value": vals}}
	default:
		for _, u := range users {
			vals = append(vals, map[string]any{"$ref": nil, "value": u.ID})
		}
		ops = []any{map[string]any{"op": "Add", "path": "members", "value": vals}}
	}
	return s.patchGroup(ctx, g, ops)
}

// RemoveMembers removes users from g: Okta (and Entra with the flag) with one
// members[value eq "…"] filter per user, Entra with a value list (the form literal RFC servers
// mistake for remove-all).
func (s *SCIM) RemoveMembers(ctx context.Context, g *SCIMGroup, users ...*SCIMUser) (Result, error) {
	var ops []any
	switch s.Dialect {
	case Okta, EntraFlag:
		if s.Dialect == Okta {
			ops = append(ops, map[string]any{"op": "replace", "value": map[string]any{"id": g.ID, "displayName": g.DisplayName}})
		}
		for _, u := range users {
			ops = append(ops, map[string]any{"op": "remove", "path": fmt.Sprintf("members[value eq %q]", u.ID)})
		}
	default:
		var vals []any
		for _, u := range users {
			vals = append(vals, map[string]any{"value": u.ID})
		}
		ops = []any{map[string]any{"op": "Remove", "path": "members", "value": vals}}
	}
	return s.patchGroup(ctx, g, ops)
}

func (s *SCIM) patchGroup(ctx context.Context, g *SCIMGroup, ops []any) (Result, error) {
	res, err := s.Do(ctx, http.MethodPatch, "/Groups/"+g.ID, map[string]any{"schemas": []string{schemaPatch}, "Operations": ops})
	if err != nil {
		return res, err
	}
	return res, res.Err(http.StatusOK, http.StatusNoContent)
}
