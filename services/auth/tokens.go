package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/scimflow/scimflow/events"
)

// Token types, in the typ claim. A session token is never accepted where an app token is expected
// and the reverse (R7), because both carry different typ and aud values.
const (
	typSession = "session"
	typApp     = "app"
)

// sessionAudience is the aud of session tokens: only auth itself consumes them.
const sessionAudience = "scimflow-auth-session"

// maxTokenLen bounds a session token read from a cookie before any parsing.
const maxTokenLen = 8 << 10

// sessionClaims are the claims of a session token: who logged in, through which IdP, and when.
// The identity claims are what the login computed; /verify prefers a newer registry snapshot.
type sessionClaims struct {
	Issuer     string         `json:"iss"`
	Audience   string         `json:"aud"`
	Type       string         `json:"typ"`
	Subject    string         `json:"sub"` // registry user id
	SID        string         `json:"sid"` // random session id; events carry only its SHA-256
	IdP        string         `json:"idp"`
	OIDCSub    string         `json:"oidc_sub,omitempty"`
	Email      string         `json:"email"`
	Name       string         `json:"name,omitempty"`
	Groups     []events.Group `json:"groups,omitempty"`
	OIDCFields map[string]any `json:"oidc_fields,omitempty"`
	IssuedAt   int64          `json:"iat"`
	IssuedNano int64          `json:"iat_ns"` // nanosecond issue time: revocation compares it with revoked_before
	Expiry     int64          `json:"exp"`
	// IdentitySeq is the issuing replica's IDENTITY cursor when the login read the projection (after
	// the catch-up barrier): the session is built from exactly the events up to it. An IDENTITY event
	// applied at a later sequence is newer information for this session, whatever its event time
	// (see ordering in projection.go). Sequences are the stream's, so every replica compares alike.
	// Nil in tokens minted before it existed: those fall back to comparing event times.
	IdentitySeq *uint64 `json:"id_seq,omitempty"`
	// Trimmed marks a session whose groups and oidc_fields were left out because the cookie would be
	// too large: it has no identity of its own, so it follows the registry snapshot in every mode.
	Trimmed bool `json:"trim,omitempty"`
}

func (c *sessionClaims) issued() time.Time  { return time.Unix(0, c.IssuedNano) }
func (c *sessionClaims) expires() time.Time { return time.Unix(c.Expiry, 0) }

// appClaims are the claims of the short-lived app token sent to protected applications in
// X-Scimflow-Jwt-Assertion (Cloudflare's Cf-Access-Jwt-Assertion).
type appClaims struct {
	Issuer     string         `json:"iss"`
	Audience   []string       `json:"aud"`
	Type       string         `json:"type"`
	Subject    string         `json:"sub"`
	Email      string         `json:"email"`
	Name       string         `json:"name,omitempty"`
	Groups     []string       `json:"groups"`
	IdP        idpRef         `json:"idp"`
	OIDCFields map[string]any `json:"oidc_fields,omitempty"`
	IssuedAt   int64          `json:"iat"`
	NotBefore  int64          `json:"nbf"`
	Expiry     int64          `json:"exp"`
}

type idpRef struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// newSessionID returns 256 random bits, base64url.
func newSessionID() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// hashSID is the SHA-256 of a session id, hex: what events and the logout projection carry.
func hashSID(sid string) string {
	sum := sha256.Sum256([]byte(sid))
	return hex.EncodeToString(sum[:])
}

// sign serialises claims as a JWS signed with the current key.
func (r *keyring) sign(claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := r.current.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return obj.CompactSerialize()
}

var errBadToken = errors.New("invalid token")

// verifyJWS checks a compact JWS against the keyring (reloading it once if the kid is unknown) and
// returns its payload.
func (m *keyManager) verifyJWS(ctx context.Context, raw string) ([]byte, string, error) {
	if len(raw) > maxTokenLen {
		return nil, "", errBadToken
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{signingAlg})
	if err != nil || len(jws.Signatures) != 1 {
		return nil, "", errBadToken
	}
	kid := jws.Signatures[0].Header.KeyID
	r := m.keys()
	k, ok := r.byKID[kid]
	if !ok && m.reloadForUnknownKID(ctx) {
		k, ok = m.keys().byKID[kid]
	}
	if !ok {
		return nil, "", errBadToken
	}
	payload, err := jws.Verify(&k.priv.PublicKey)
	if err != nil {
		return nil, "", errBadToken
	}
	return payload, kid, nil
}

// verifySession checks a session token's signature, type, audience, issuer and expiry. Revocation
// is checked by the caller against the projection.
func (s *server) verifySession(ctx context.Context, raw string, now time.Time) (*sessionClaims, string, error) {
	payload, kid, err := s.keys.verifyJWS(ctx, raw)
	if err != nil {
		return nil, "", err
	}
	var c sessionClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, "", errBadToken
	}
	if c.Type != typSession || c.Audience != sessionAudience || c.Issuer != s.issuer || c.SID == "" || c.Subject == "" || c.IdP == "" {
		return nil, "", errBadToken
	}
	if !now.Before(c.expires()) {
		return nil, "", errExpired
	}
	return &c, kid, nil
}

var errExpired = errors.New("session expired")

// loginTxn is the login transaction, kept encrypted in a short-lived cookie between /login and
// /callback: it binds state, nonce and the PKCE verifier to this browser and to one IdP.
type loginTxn struct {
	ID       string `json:"id"`
	IdP      string `json:"idp"`
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier,omitempty"`
	Redirect string `json:"redirect"`
	Test     bool   `json:"test,omitempty"` // the /test flow: show the identity, make no session
	Expires  int64  `json:"exp"`
}

// seal encrypts v with the keyring's AEAD; aad binds the ciphertext to its cookie name.
func (r *keyring) seal(v any, aad string) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, r.aead.NonceSize(), r.aead.NonceSize()+len(plain)+r.aead.Overhead())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(r.aead.Seal(nonce, nonce, plain, []byte(aad))), nil
}

// open reverses seal.
func (r *keyring) open(s, aad string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < r.aead.NonceSize()+r.aead.Overhead() {
		return errBadToken
	}
	n := r.aead.NonceSize()
	plain, err := r.aead.Open(nil, b[:n], b[n:], []byte(aad))
	if err != nil {
		return errBadToken
	}
	return json.Unmarshal(plain, v)
}

// randomToken returns n random bytes, base64url.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
