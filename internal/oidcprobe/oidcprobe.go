// Package oidcprobe checks an OpenID Provider configuration against the provider itself: its
// discovery document and key set. identity-store runs it when an IdP is saved (so an IdP that cannot
// work is refused with the reason, not discovered at the first login), and auth uses the same
// algorithm allow-list and discovery reading when it builds and refreshes a relying party.
package oidcprobe

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/scimflow/scimflow/events"
)

// SupportedSigningAlgs are the only ID-token algorithms scimflow accepts (docs/design.md §5). HS*, none,
// RS384, PS256, PS384 and EdDSA are refused even when an IdP advertises them.
func SupportedSigningAlgs() []string {
	return []string{"RS256", "RS512", "PS512", "ES256", "ES384", "ES512"}
}

// MaxResponse bounds any document read from an IdP.
const MaxResponse = 1 << 20

// Discovery is the part of an OpenID Provider's discovery document scimflow uses.
type Discovery struct {
	Issuer   string   `json:"issuer"`
	AuthURL  string   `json:"authorization_endpoint"`
	TokenURL string   `json:"token_endpoint"`
	JWKSURI  string   `json:"jwks_uri"`
	UserInfo string   `json:"userinfo_endpoint"`
	Algs     []string `json:"id_token_signing_alg_values_supported"`
	IssParam bool     `json:"authorization_response_iss_parameter_supported"`
}

// UsableAlgs returns the advertised algorithms scimflow accepts, in SupportedSigningAlgs order; all
// of them when the document does not say.
func (d Discovery) UsableAlgs() []string {
	algs := SupportedSigningAlgs()
	if len(d.Algs) == 0 {
		return algs
	}
	return slices.DeleteFunc(algs, func(a string) bool { return !slices.Contains(d.Algs, a) })
}

// ErrUnreachable marks a failure to reach the IdP or a server error from it: the configuration may be
// right and the IdP down, so a save warns instead of refusing.
var ErrUnreachable = errors.New("unreachable")

// get reads url with client, bounded by MaxResponse; network errors and 5xx wrap ErrUnreachable.
func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w: %v", url, ErrUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w: %v", url, ErrUnreachable, err)
	}
	switch {
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("GET %s: %w: %s", url, ErrUnreachable, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	case len(body) > MaxResponse:
		return nil, fmt.Errorf("GET %s: larger than %d bytes", url, MaxResponse)
	}
	return body, nil
}

// Discover reads issuer's discovery document and checks that it names the same issuer (O6).
func Discover(ctx context.Context, client *http.Client, issuer string) (Discovery, error) {
	body, err := get(ctx, client, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return Discovery{}, fmt.Errorf("discovery: %w", err)
	}
	var d Discovery
	if err := json.Unmarshal(body, &d); err != nil {
		return Discovery{}, fmt.Errorf("discovery: not a JSON document: %v", err)
	}
	if d.Issuer != issuer {
		return Discovery{}, fmt.Errorf("discovery: the document's issuer %q differs from the configured %q", d.Issuer, issuer)
	}
	return d, nil
}

// Result is what Probe found: Problems make the IdP unusable (a save answers 400); Warnings do not
// (the IdP could not be reached, so nothing was checked).
type Result struct {
	Problems []string
	Warnings []string
}

// Probe checks c against the provider: discovery (unless the three endpoints are set), that it
// advertises an algorithm scimflow accepts, and that the key set holds a key for one of them.
func Probe(ctx context.Context, client *http.Client, c events.OIDCConfig) Result {
	var res Result
	note := func(field string, err error) {
		msg := field + ": " + err.Error()
		if errors.Is(err, ErrUnreachable) {
			res.Warnings = append(res.Warnings, msg+" (not checked; logins fail until it answers)")
		} else {
			res.Problems = append(res.Problems, msg)
		}
	}
	algs := SupportedSigningAlgs()
	jwksURL := c.CertsURL
	if c.Issuer != "" && (c.AuthURL == "" || c.TokenURL == "" || c.CertsURL == "") {
		d, err := Discover(ctx, client, c.Issuer)
		if err != nil {
			note("config.issuer", err)
			return res
		}
		if algs = d.UsableAlgs(); len(algs) == 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("config.issuer: the provider signs ID tokens only with %v; scimflow accepts %v",
				d.Algs, SupportedSigningAlgs()))
			return res
		}
		if jwksURL == "" {
			jwksURL = d.JWKSURI
		}
		if jwksURL == "" {
			res.Problems = append(res.Problems, "config.issuer: discovery names no jwks_uri; set config.certs_url")
			return res
		}
	}
	if jwksURL == "" {
		return res
	}
	field := "config.certs_url"
	if c.CertsURL == "" {
		field = "config.issuer (jwks_uri)"
	}
	body, err := get(ctx, client, jwksURL)
	if err != nil {
		note(field, fmt.Errorf("key set: %w", err))
		return res
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		res.Problems = append(res.Problems, field+": key set is not a JWKS document")
		return res
	}
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) != nil || !key.Valid() || !key.IsPublic() || (key.Use != "" && key.Use != "sig") {
			continue
		}
		if keyFits(key, algs) {
			return res
		}
	}
	res.Problems = append(res.Problems, fmt.Sprintf("%s: the key set holds no signing key for %v", field, algs))
	return res
}

// keyFits reports whether key can verify a token in one of algs: its alg when it names one, else
// its key type (an Ed25519 key without alg fits none).
func keyFits(key jose.JSONWebKey, algs []string) bool {
	if key.Algorithm != "" {
		return slices.Contains(algs, key.Algorithm)
	}
	var prefixes []string
	switch key.Key.(type) {
	case *rsa.PublicKey:
		prefixes = []string{"RS", "PS"}
	case *ecdsa.PublicKey:
		prefixes = []string{"ES"}
	}
	return slices.ContainsFunc(algs, func(a string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(a, p) })
	})
}
