package events

import "time"

// Update behaviours of scim_config.identity_update_behavior (docs/design.md §4).
const (
	UpdateAutomatic = "automatic"
	UpdateReauth    = "reauth"
	UpdateNoAction  = "no_action"
)

// IdP is the value stored under the IdP id in the idp_config KV bucket: written by identity-store's
// admin API (or the config seed), watched by every service. It is a wire contract like the events.
// ClientSecret is kept in clear here because auth needs it; the admin API redacts it on every read.
// The SCIM secret is stored only as a SHA-256 digest.
type IdP struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Type       string     `json:"type"` // "oidc"
	Config     OIDCConfig `json:"config"`
	SCIMConfig SCIMConfig `json:"scim_config"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

// OIDCConfig is the generic OIDC relying-party configuration of an IdP (Cloudflare's field names).
type OIDCConfig struct {
	ClientID       string   `json:"client_id"`
	ClientSecret   string   `json:"client_secret,omitempty"`
	AuthURL        string   `json:"auth_url,omitempty"`
	TokenURL       string   `json:"token_url,omitempty"`
	CertsURL       string   `json:"certs_url,omitempty"`
	Issuer         string   `json:"issuer,omitempty"` // discovery when the three URLs are empty
	PKCEEnabled    bool     `json:"pkce_enabled"`
	EmailClaimName string   `json:"email_claim_name,omitempty"` // default "email"
	Claims         []string `json:"claims,omitempty"`           // copied into oidc_fields
	Scopes         []string `json:"scopes,omitempty"`           // must contain "openid"
}

// SCIMConfig is an IdP's SCIM settings.
type SCIMConfig struct {
	Enabled                bool      `json:"enabled"`
	UserDeprovision        bool      `json:"user_deprovision"`
	SeatDeprovision        bool      `json:"seat_deprovision"` // requires UserDeprovision
	IdentityUpdateBehavior string    `json:"identity_update_behavior"`
	SecretSHA256           string    `json:"secret_sha256,omitempty"`          // hex SHA-256 of the bearer secret
	PreviousSecretSHA256   string    `json:"previous_secret_sha256,omitempty"` // valid for a grace period after a refresh
	SecretRotatedAt        time.Time `json:"secret_rotated_at,omitempty"`
}

// Policy is the part of an IdP's SCIM settings that decides what a SCIM change does to identities.
// scim-ingest stamps the policy in force when a change commits into its events, so identity-store
// applies exactly what was configured then, and a replay gives the same result.
type Policy struct {
	IdentityUpdateBehavior string `json:"identity_update_behavior"`
	UserDeprovision        bool   `json:"user_deprovision"`
	SeatDeprovision        bool   `json:"seat_deprovision"`
}

// PolicyOf returns the policy of c.
func PolicyOf(c SCIMConfig) Policy {
	return Policy{IdentityUpdateBehavior: c.IdentityUpdateBehavior, UserDeprovision: c.UserDeprovision, SeatDeprovision: c.SeatDeprovision}
}
