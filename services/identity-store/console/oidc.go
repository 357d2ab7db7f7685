package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// headerAssertion carries auth's app token; a reverse proxy sets it after /verify said yes
// (docs/reverse-proxies.md).
const headerAssertion = "X-Scimflow-Jwt-Assertion"

// keyRefreshCooldown is the shortest time between two fetches of auth's keys caused by an unknown
// kid, so a stream of forged kids cannot turn the console into a load generator against auth.
const keyRefreshCooldown = 30 * time.Second

// keySet holds auth's public signing keys (its /certs).
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex // guards the following
	keys    jose.JSONWebKeySet
	fetched time.Time
}

func newKeySet(url string, client *http.Client, now func() time.Time) *keySet {
	return &keySet{url: url, client: client, now: now}
}

// key returns the key with kid, fetching the set when it is unknown (at most once per cooldown).
func (k *keySet) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ks := k.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	if !k.fetched.IsZero() && k.now().Sub(k.fetched) < keyRefreshCooldown {
		return nil, errors.New("unknown key id")
	}
	k.fetched = k.now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	res, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch auth keys: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch auth keys: %s", res.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("fetch auth keys: %w", err)
	}
	k.keys = set
	if ks := k.keys.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	return nil, errors.New("unknown key id")
}

// appIdentity is what the console reads from an app token.
type appIdentity struct {
	Issuer   string          `json:"iss"`
	Audience jsonStringOrArr `json:"aud"`
	Type     string          `json:"type"`
	Subject  string          `json:"sub"`
	Email    string          `json:"email"`
	Groups   []string        `json:"groups"`
	IdP      struct {
		ID string `json:"id"`
	} `json:"idp"`
	NotBefore int64 `json:"nbf"`
	Expiry    int64 `json:"exp"`
}

type jsonStringOrArr []string

func (a *jsonStringOrArr) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = []string{s}
		return nil
	}
	var arr []string
	if err := json.Unmarshal(b, &arr); err != nil {
		return err
	}
	*a = arr
	return nil
}

// verifyAppToken checks an app token's ES256 signature against auth's keys, its type, issuer,
// audience and validity window, and that it names a member of the console admin group of the
// console admin IdP.
func (c *Console) verifyAppToken(ctx context.Context, raw string) (*appIdentity, error) {
	if len(raw) > 16<<10 {
		return nil, errors.New("token too long")
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, errors.New("not a signed token")
	}
	key, err := c.keys.key(ctx, jws.Signatures[0].Header.KeyID)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return nil, errors.New("bad signature")
	}
	var id appIdentity
	if err := json.Unmarshal(payload, &id); err != nil {
		return nil, errors.New("undecodable claims")
	}
	now := c.b.Now().Unix()
	const leeway = 30
	switch {
	case id.Type != "app":
		return nil, fmt.Errorf("token type %q, want app", id.Type)
	case strings.TrimRight(id.Issuer, "/") != strings.TrimRight(c.cfg.AuthURL, "/"):
		return nil, fmt.Errorf("issuer %q is not auth's", id.Issuer)
	case !slices.Contains(id.Audience, c.cfg.AppAudience):
		return nil, fmt.Errorf("audience %v, want %q", id.Audience, c.cfg.AppAudience)
	case now > id.Expiry+leeway || now+leeway < id.NotBefore:
		return nil, errors.New("expired or not yet valid")
	case id.IdP.ID != c.cfg.AdminIdP:
		return nil, fmt.Errorf("identity provider %q is not the console's", id.IdP.ID)
	case !slices.ContainsFunc(id.Groups, func(g string) bool { return strings.EqualFold(g, c.cfg.AdminGroup) }):
		return nil, fmt.Errorf("%s is not in group %q", id.Email, c.cfg.AdminGroup)
	case id.Subject == "":
		return nil, errors.New("no subject")
	}
	return &id, nil
}
