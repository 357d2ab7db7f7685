package identitystore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/oidcprobe"
)

// idpBody is the create/update body of the admin API and the shape of a config seed entry
// (docs/design.md §5). id and scim_config.secret / secret_sha256 are accepted only in a seed: a seed needs a
// stable id, and may pin the SCIM secret so that a declaratively configured IdP keeps working.
type idpBody struct {
	ID         string            `json:"id,omitempty"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	Config     events.OIDCConfig `json:"config"`
	SCIMConfig scimConfigBody    `json:"scim_config"`
	// Read-only fields of idpView, accepted and ignored so that a GET result sent back with PUT
	// works (docs/admin-api.md).
	CreatedAt json.RawMessage `json:"created_at,omitempty"`
	UpdatedAt json.RawMessage `json:"updated_at,omitempty"`
}

type scimConfigBody struct {
	Enabled                bool   `json:"enabled"`
	UserDeprovision        bool   `json:"user_deprovision"`
	SeatDeprovision        bool   `json:"seat_deprovision"`
	IdentityUpdateBehavior string `json:"identity_update_behavior"`
	Secret                 string `json:"secret,omitempty"`        // seed only
	SecretSHA256           string `json:"secret_sha256,omitempty"` // seed only
	SCIMBaseURL            string `json:"scim_base_url,omitempty"` // read-only; ignored (clients echo GET bodies)
	// Read-only like scim_base_url.
	SecretSet       json.RawMessage `json:"secret_set,omitempty"`
	SecretRotatedAt json.RawMessage `json:"secret_rotated_at,omitempty"`
}

// idpView is what the admin API returns: secrets redacted, scim_base_url added, the SCIM secret only
// right after it was generated.
type idpView struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	Config     events.OIDCConfig `json:"config"`
	SCIMConfig scimConfigView    `json:"scim_config"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

type scimConfigView struct {
	Enabled                bool      `json:"enabled"`
	UserDeprovision        bool      `json:"user_deprovision"`
	SeatDeprovision        bool      `json:"seat_deprovision"`
	IdentityUpdateBehavior string    `json:"identity_update_behavior"`
	SCIMBaseURL            string    `json:"scim_base_url"`
	Secret                 string    `json:"secret,omitempty"`
	SecretSet              bool      `json:"secret_set"`
	SecretRotatedAt        time.Time `json:"secret_rotated_at,omitzero"`
}

// Redacted marks a secret on reads; sending it back in a PUT keeps the stored value.
const Redacted = "**********"

func (s *service) view(p events.IdP, secret string) idpView {
	c := p.Config
	if c.ClientSecret != "" {
		c.ClientSecret = Redacted
	}
	return idpView{ID: p.ID, Name: p.Name, Type: p.Type, Config: c, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
		SCIMConfig: scimConfigView{
			Enabled: p.SCIMConfig.Enabled, UserDeprovision: p.SCIMConfig.UserDeprovision, SeatDeprovision: p.SCIMConfig.SeatDeprovision,
			IdentityUpdateBehavior: p.SCIMConfig.IdentityUpdateBehavior, SCIMBaseURL: s.scimBaseURL(p.ID),
			Secret: secret, SecretSet: p.SCIMConfig.SecretSHA256 != "", SecretRotatedAt: p.SCIMConfig.SecretRotatedAt,
		}}
}

func (s *service) scimBaseURL(id string) string {
	return strings.TrimRight(s.cfg.SCIMBaseURL, "/") + "/populations/" + id + "/scim/v2"
}

func decodeBody(raw []byte) (idpBody, error) {
	var b idpBody
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("invalid JSON body: %w", err)
	}
	if dec.More() {
		return b, errors.New("invalid JSON body: trailing data")
	}
	return b, nil
}

// parseSeed decodes and checks one identity_providers entry on its own (duplicate names are checked
// against the bucket when seeding).
func parseSeed(raw []byte) (idpBody, error) {
	b, err := decodeBody(raw)
	if err != nil {
		return b, err
	}
	var errs []error
	if !validID.MatchString(b.ID) {
		errs = append(errs, errors.New("id: required in a seed entry, 1-64 of [A-Za-z0-9_-]"))
	}
	if b.SCIMConfig.SecretSHA256 != "" && !isSHA256Hex(b.SCIMConfig.SecretSHA256) {
		errs = append(errs, errors.New("scim_config.secret_sha256: want 64 lower-case hex digits"))
	}
	if b.SCIMConfig.Secret != "" && len(b.SCIMConfig.Secret) < 32 {
		errs = append(errs, errors.New("scim_config.secret: at least 32 characters"))
	}
	p := b.toIdP()
	for _, e := range validateIdP(p, nil) {
		errs = append(errs, errors.New(e))
	}
	return b, errors.Join(errs...)
}

var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// toIdP applies defaults: scopes openid/email/profile, email claim "email", update behaviour no_action.
func (b idpBody) toIdP() events.IdP {
	p := events.IdP{ID: b.ID, Name: strings.TrimSpace(b.Name), Type: b.Type, Config: b.Config}
	p.SCIMConfig = events.SCIMConfig{Enabled: b.SCIMConfig.Enabled, UserDeprovision: b.SCIMConfig.UserDeprovision,
		SeatDeprovision: b.SCIMConfig.SeatDeprovision, IdentityUpdateBehavior: b.SCIMConfig.IdentityUpdateBehavior}
	if p.Type == "" {
		p.Type = "oidc"
	}
	if p.SCIMConfig.IdentityUpdateBehavior == "" {
		p.SCIMConfig.IdentityUpdateBehavior = events.UpdateNoAction
	}
	if p.Config.EmailClaimName == "" {
		p.Config.EmailClaimName = "email"
	}
	if len(p.Config.Scopes) == 0 {
		p.Config.Scopes = []string{"openid", "email", "profile"}
	}
	return p
}

// validateIdP returns every problem of p; others are the IdPs already stored (for duplicate names).
func validateIdP(p events.IdP, others []events.IdP) []string {
	var errs []string
	if p.Name == "" {
		errs = append(errs, "name: required")
	}
	if p.Type != "oidc" {
		errs = append(errs, fmt.Sprintf("type: %q is not supported (want \"oidc\")", p.Type))
	}
	c := p.Config
	if c.ClientID == "" {
		errs = append(errs, "config.client_id: required")
	}
	if c.ClientSecret == "" {
		errs = append(errs, "config.client_secret: required")
	}
	urls := map[string]string{"config.auth_url": c.AuthURL, "config.token_url": c.TokenURL, "config.certs_url": c.CertsURL, "config.issuer": c.Issuer}
	for _, f := range []string{"config.auth_url", "config.token_url", "config.certs_url", "config.issuer"} {
		if v := urls[f]; v != "" && !absoluteURL(v) {
			errs = append(errs, fmt.Sprintf("%s: %q is not an absolute http(s) URL", f, v))
		}
	}
	if c.Issuer == "" {
		for _, f := range []string{"config.auth_url", "config.token_url", "config.certs_url"} {
			if urls[f] == "" {
				errs = append(errs, f+": required unless config.issuer is set (discovery)")
			}
		}
	}
	if !slices.Contains(c.Scopes, "openid") {
		errs = append(errs, "config.scopes: must contain \"openid\"")
	}
	for _, cl := range c.Claims {
		if strings.TrimSpace(cl) == "" {
			errs = append(errs, "config.claims: empty claim name")
			break
		}
	}
	sc := p.SCIMConfig
	switch sc.IdentityUpdateBehavior {
	case events.UpdateAutomatic, events.UpdateReauth, events.UpdateNoAction:
	default:
		errs = append(errs, fmt.Sprintf("scim_config.identity_update_behavior: %q is not one of automatic, reauth, no_action", sc.IdentityUpdateBehavior))
	}
	if sc.SeatDeprovision && !sc.UserDeprovision {
		errs = append(errs, "scim_config.seat_deprovision: cannot be enabled unless user_deprovision is also enabled")
	}
	for _, o := range others {
		if o.ID != p.ID && strings.EqualFold(strings.TrimSpace(o.Name), p.Name) && p.Name != "" {
			errs = append(errs, fmt.Sprintf("name: %q is already used by identity provider %s", p.Name, o.ID))
		}
	}
	return errs
}

func absoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// newSecret returns a SCIM bearer secret: 256 random bits with a recognisable prefix, and its SHA-256.
func newSecret() (secret, digest string, err error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", err
	}
	secret = "scim_" + base64.RawURLEncoding.EncodeToString(raw[:])
	return secret, sha256Hex(secret), nil
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// listIdPs returns every stored IdP, sorted by name then id.
func listIdPs(ctx context.Context, kv jetstream.KeyValue) ([]events.IdP, error) {
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []events.IdP
	for _, k := range keys {
		p, _, err := getIdP(ctx, kv, k)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b events.IdP) int {
		if c := strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

var errNotFound = errors.New("not found")

func getIdP(ctx context.Context, kv jetstream.KeyValue, id string) (events.IdP, uint64, error) {
	if !validID.MatchString(id) {
		return events.IdP{}, 0, errNotFound
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return events.IdP{}, 0, errNotFound
	}
	if err != nil {
		return events.IdP{}, 0, err
	}
	var p events.IdP
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return events.IdP{}, 0, fmt.Errorf("idp_config %s: %w", id, err)
	}
	return p, e.Revision(), nil
}

// seed applies the config file's identity_providers idempotently: an entry equal to what is stored
// (timestamps aside) is left alone; a changed one is updated keeping created_at and, unless the seed
// pins one, the SCIM secret.
func (s *service) seed(ctx context.Context) error {
	if len(s.cfg.IdentityProviders) == 0 {
		return nil
	}
	kv, err := s.kv(ctx)
	if err != nil {
		return fmt.Errorf("seed identity providers: %w", err)
	}
	var errs []error
	for i, raw := range s.cfg.IdentityProviders {
		b, err := parseSeed(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("identity_providers[%d]: %w", i, err))
			continue
		}
		if err := s.seedOne(ctx, kv, b); err != nil {
			errs = append(errs, fmt.Errorf("identity_providers[%d] (%s): %w", i, b.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *service) seedOne(ctx context.Context, kv jetstream.KeyValue, b idpBody) error {
	p := b.toIdP()
	all, err := listIdPs(ctx, kv)
	if err != nil {
		return err
	}
	if probs := validateIdP(p, all); len(probs) > 0 {
		return errors.New(strings.Join(probs, "; "))
	}
	old, rev, err := getIdP(ctx, kv, p.ID)
	exists := err == nil
	if err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	digest := b.SCIMConfig.SecretSHA256
	if b.SCIMConfig.Secret != "" {
		digest = sha256Hex(b.SCIMConfig.Secret)
	}
	now := s.now().UTC()
	if exists {
		p.SCIMConfig.SecretSHA256 = old.SCIMConfig.SecretSHA256
		p.SCIMConfig.PreviousSecretSHA256 = old.SCIMConfig.PreviousSecretSHA256
		p.SCIMConfig.SecretRotatedAt = old.SCIMConfig.SecretRotatedAt
		if digest != "" && digest != old.SCIMConfig.SecretSHA256 {
			p.SCIMConfig.PreviousSecretSHA256 = old.SCIMConfig.SecretSHA256
			p.SCIMConfig.SecretSHA256 = digest
			p.SCIMConfig.SecretRotatedAt = now
		}
		p.CreatedAt, p.UpdatedAt = old.CreatedAt, old.UpdatedAt
		if same(old, p) {
			return nil
		}
		p.UpdatedAt = now
		raw, _ := json.Marshal(p)
		newRev, err := kv.Update(ctx, p.ID, raw, rev)
		if err == nil {
			s.idpc.wrote(p, newRev)
			s.d.Log().Info("identity provider updated from config", "idp_id", p.ID)
		}
		return err
	}
	p.SCIMConfig.SecretSHA256 = digest
	p.CreatedAt, p.UpdatedAt = now, now
	raw, _ := json.Marshal(p)
	newRev, err := kv.Create(ctx, p.ID, raw)
	if err != nil {
		return err
	}
	s.idpc.wrote(p, newRev)
	if digest == "" {
		s.d.Log().Warn("identity provider seeded without a SCIM secret; POST /api/v1/identity_providers/{id}/refresh_scim_secret to get one", "idp_id", p.ID)
	} else {
		s.d.Log().Info("identity provider seeded from config", "idp_id", p.ID)
	}
	return nil
}

func same(a, b events.IdP) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// probeTimeout bounds the save-time check of an IdP: an admin waits for it.
const probeTimeout = 5 * time.Second

// defaultProbe checks c against its provider with a client that follows no redirects and reads
// bounded bodies (internal/oidcprobe).
func defaultProbe(ctx context.Context, c events.OIDCConfig) oidcprobe.Result {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	client := &http.Client{Timeout: probeTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return oidcprobe.Probe(ctx, client, c)
}

// probeSeeds checks every seeded IdP against its provider and logs what would make a save refuse it
// (a seed never blocks start; the login error page shows the same reason).
func (s *service) probeSeeds(ctx context.Context) {
	for i, raw := range s.cfg.IdentityProviders {
		b, err := parseSeed(raw)
		if err != nil {
			continue // reported by Validate
		}
		res := s.probe(ctx, b.toIdP().Config)
		for _, p := range res.Problems {
			s.d.Log().Warn("seeded identity provider cannot work", "idp_id", b.ID, "index", i, "problem", p)
		}
		for _, w := range res.Warnings {
			s.d.Log().Warn("seeded identity provider not checked", "idp_id", b.ID, "index", i, "warning", w)
		}
	}
}
