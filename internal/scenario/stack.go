package scenario

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/scimflow/scimflow/internal/devidp"
)

// Endpoints are the public listeners of a running scimflow (all-in-one or separate services).
type Endpoints struct {
	// SCIM is scim-ingest's base URL (scim_ingest.base_url).
	SCIM string
	// Admin is identity-store's admin API base URL.
	Admin string
	// Auth is auth's external URL.
	Auth string
	// AdminToken is the admin API's bearer token.
	AdminToken string
}

// AdminClient returns an admin API client for e.
func (e Endpoints) AdminClient() *Admin {
	return &Admin{BaseURL: e.Admin, Token: e.AdminToken}
}

// WaitReady polls every listener's /readyz until all answer 200 or timeout passes.
func (e Endpoints) WaitReady(ctx context.Context, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	return Eventually(ctx, timeout, func() error {
		for _, base := range []string{e.SCIM, e.Admin, e.Auth} {
			resp, err := c.Get(strings.TrimRight(base, "/") + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s/readyz = %d", base, resp.StatusCode)
			}
		}
		return nil
	})
}

// ClientID is the OIDC client id every scenario IdP uses at the test provider.
const ClientID = "scimflow"

// StartProvider starts the test OpenID provider on loopback with ClientID and a random client
// secret, which it returns; it accepts any redirect URI (auth's port is chosen after it starts).
func StartProvider() (*devidp.Provider, string, error) {
	secret := RandomString(24)
	p, err := devidp.Start(devidp.Options{ClientID: ClientID, ClientSecret: secret})
	return p, secret, err
}

// OP is what the scenarios need of an OpenID provider: its endpoints and its accounts. Both the
// honest devidp.Provider and the test kit's forging oidctest.Provider are one.
type OP interface {
	Issuer() string
	AuthURL() string
	TokenURL() string
	JWKSURL() string
	AddUser(devidp.User) error
}

// NewIdPSpec returns the create body of an IdP that logs in at provider p (secret: p's client
// secret) with the given SCIM policy. SCIM is enabled.
func NewIdPSpec(name string, p OP, clientSecret string, behavior string, userDeprov, seatDeprov bool) IdPSpec {
	return IdPSpec{
		Name: name, Type: "oidc",
		Config: OIDCConfig{
			ClientID: ClientID, ClientSecret: clientSecret, Issuer: p.Issuer(),
			AuthURL: p.AuthURL(), TokenURL: p.TokenURL(), CertsURL: p.JWKSURL(),
			PKCEEnabled: true, EmailClaimName: "email", Scopes: []string{"openid", "email", "profile"},
		},
		SCIMConfig: SCIMConfig{Enabled: true, IdentityUpdateBehavior: behavior, UserDeprovision: userDeprov, SeatDeprovision: seatDeprov},
	}
}

// Person is someone who exists both at the OpenID provider (Sub) and in the IdP's directory
// (SCIMUser). NewPerson registers them at the provider.
type Person struct {
	Sub  string
	User *SCIMUser
}

// NewPerson registers an account at p for email and returns the person with an active SCIM user.
// The provider sends no groups claim: with SCIM enabled, groups come from SCIM.
func NewPerson(p OP, email, given, family string) (*Person, error) {
	sub := "sub-" + strings.ToLower(email)
	if err := p.AddUser(devidp.User{Sub: sub, Email: email, Name: given + " " + family}); err != nil {
		return nil, err
	}
	return &Person{Sub: sub, User: &SCIMUser{UserName: email, GivenName: given, FamilyName: family, Active: true}}, nil
}

// RandomString returns n random characters from [A-Za-z0-9].
func RandomString(n int) string {
	s := rand.Text()
	for len(s) < n {
		s += rand.Text()
	}
	return s[:n]
}
