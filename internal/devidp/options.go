package devidp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// The client authentication methods the token endpoint understands (RFC 6749 §2.3.1, OIDC
// Core §9). They are exported so tests can restrict the provider to one of them and assert
// which one the relying party used.
const (
	// ClientSecretBasic sends client_id and client_secret in an HTTP Basic Authorization header.
	ClientSecretBasic = "client_secret_basic"
	// ClientSecretPost sends client_id and client_secret as form parameters of the token request.
	ClientSecretPost = "client_secret_post"
)

// Options configures a Provider. It is a plain struct, like the rest of scimflow's
// configuration, so tests state every non-default choice where they build the provider.
type Options struct {
	// Issuer is the provider's issuer URL. Empty means: Start sets it from the listener
	// ("http://127.0.0.1:port"); a caller of New and Handler must call SetIssuer before
	// serving. A path is allowed (e.g. "http://host/realms/a"); endpoints live under it.
	Issuer string
	// Addr is the address Start listens on. Default "127.0.0.1:0".
	Addr string
	// ClientID is the one client the provider knows. Required.
	ClientID string
	// ClientSecret is that client's secret. Required.
	ClientSecret string
	// RedirectURIs, when set, are the only redirect URIs /authorize accepts (exact string
	// match, RFC 9700 §2.1). Empty accepts any absolute http(s) URL, because end-to-end
	// tests learn auth's port only after the provider is running.
	RedirectURIs []string
	// Alg is the algorithm that signs ID tokens until SetAlg changes it. Default RS256.
	Alg string
	// ClientAuthMethods are the token endpoint authentication methods accepted and
	// advertised in discovery. Default both ClientSecretBasic and ClientSecretPost.
	ClientAuthMethods []string
	// TokenTTL is the lifetime of ID and access tokens. Default one hour.
	TokenTTL time.Duration
	// ExtraKeyAlgs are algorithms whose keys are generated and published in the JWKS but never sign
	// a genuine token (a test kit signs with them to check that a relying party refuses the alg).
	ExtraKeyAlgs []string
	// Now is the provider's clock; tests inject it to mint tokens at exact boundaries.
	// Default time.Now.
	Now func() time.Time
}

// SupportedAlgs returns the algorithms the provider signs genuine ID tokens with: exactly
// the allow-list scimflow's auth accepts (docs/design.md §5). It is a function, not a variable,
// so no caller can change the list for everyone else.
func SupportedAlgs() []string {
	return []string{"RS256", "RS512", "PS512", "ES256", "ES384", "ES512"}
}

// Validate reports every problem with o at once, so a test author fixes them in one pass.
func (o Options) Validate() error {
	var errs []error
	if o.ClientID == "" {
		errs = append(errs, errors.New("client id is required"))
	}
	if o.ClientSecret == "" {
		errs = append(errs, errors.New("client secret is required"))
	}
	if o.Issuer != "" {
		if err := checkIssuer(o.Issuer); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Alg != "" && !slices.Contains(SupportedAlgs(), o.Alg) {
		errs = append(errs, fmt.Errorf("alg %q is not one of %v", o.Alg, SupportedAlgs()))
	}
	for _, m := range o.ClientAuthMethods {
		if m != ClientSecretBasic && m != ClientSecretPost {
			errs = append(errs, fmt.Errorf("client auth method %q is not %s or %s", m, ClientSecretBasic, ClientSecretPost))
		}
	}
	for _, u := range o.RedirectURIs {
		if err := checkAbsoluteURL(u); err != nil {
			errs = append(errs, fmt.Errorf("redirect uri: %w", err))
		}
	}
	if o.TokenTTL < 0 {
		errs = append(errs, fmt.Errorf("token ttl %v is negative", o.TokenTTL))
	}
	return errors.Join(errs...)
}

// withDefaults returns o with every documented default filled in.
func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Alg == "" {
		o.Alg = "RS256"
	}
	if len(o.ClientAuthMethods) == 0 {
		o.ClientAuthMethods = []string{ClientSecretBasic, ClientSecretPost}
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.RedirectURIs = slices.Clone(o.RedirectURIs)
	o.ClientAuthMethods = slices.Clone(o.ClientAuthMethods)
	return o
}

func checkIssuer(issuer string) error {
	if err := checkAbsoluteURL(issuer); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	u, _ := url.Parse(issuer)
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("issuer %q has a query or fragment", issuer)
	}
	return nil
}

func checkAbsoluteURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("parse %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// User is an account the provider can log in. Its fields become claims of the ID token and
// of the userinfo response.
type User struct {
	// Sub is the subject identifier. Required and unique within the provider.
	Sub string
	// Email becomes the email claim; when set, email_verified is true unless Claims says otherwise.
	Email string
	// Name becomes the name claim.
	Name string
	// Groups becomes the groups claim; nil omits the claim, an empty slice sends [].
	Groups []string
	// Claims are extra claims of any JSON shape (strings, arrays, nested objects). They
	// override email, email_verified, name and groups. Protocol claims (iss, sub, aud, exp,
	// iat, nbf, nonce, at_hash, c_hash, azp, auth_time) are refused: the provider sets them.
	Claims map[string]any
}

// protocolClaims are the claims the provider computes itself; a user may not set them.
func protocolClaims() []string {
	return []string{"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time"}
}

// user is the provider's stored copy of a User: claims are kept as JSON so later changes
// to the caller's map cannot reach the provider.
type user struct {
	sub    string
	email  string
	name   string
	groups []string
	claims []byte
	denied bool
}

func newUser(u User) (*user, error) {
	if u.Sub == "" {
		return nil, errors.New("user sub is required")
	}
	for _, c := range protocolClaims() {
		if _, ok := u.Claims[c]; ok {
			return nil, fmt.Errorf("user %s: claim %q is set by the provider", u.Sub, c)
		}
	}
	raw, err := json.Marshal(u.Claims)
	if err != nil {
		return nil, fmt.Errorf("user %s claims: %w", u.Sub, err)
	}
	var groups []string
	if u.Groups != nil {
		groups = slices.Clone(u.Groups)
	}
	return &user{sub: u.Sub, email: u.Email, name: u.Name, groups: groups, claims: raw}, nil
}

// identityClaims returns the user's claims shared by ID tokens and userinfo, without sub.
func (u *user) identityClaims() (map[string]any, error) {
	c := map[string]any{}
	if u.email != "" {
		c["email"] = u.email
		c["email_verified"] = true
	}
	if u.name != "" {
		c["name"] = u.name
	}
	if u.groups != nil {
		c["groups"] = slices.Clone(u.groups)
	}
	extra, err := DecodeClaims(u.claims)
	if err != nil {
		return nil, fmt.Errorf("user %s claims: %w", u.sub, err)
	}
	for k, v := range extra {
		c[k] = v
	}
	return c, nil
}
