package oidctest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/scimflow/scimflow/internal/devidp"
)

// Forgery names one way to make an ID token bad. Forge applies it to the next token the
// token endpoint issues; SignIDToken applies it to a token minted directly. Each constant's
// comment gives the case id of docs/design.md §9.4 it serves and who
// rejects it: "go-oidc rejects" means IDTokenVerifier.Verify fails with SupportedSigningAlgs
// set to SupportedAlgs(); "the RP must reject" means go-oidc accepts and scimflow's own
// checks have to catch it (docs/design.md §8.1).
type Forgery string

// The forgeries. Their string values are stable and read well as subtest names.
const (
	// NoForgery issues a genuine token.
	NoForgery Forgery = ""

	// ForgeryAlgNone (O1) sends an unsigned token with header alg "none" and an empty
	// signature. go-oidc rejects it; scimflow deliberately deviates from OIDF, which accepts.
	ForgeryAlgNone Forgery = "alg-none"
	// ForgeryHS256ClientSecret (O2) is a valid HS256 MAC keyed with the client secret.
	// go-oidc rejects it: HS* is not in the allow-list.
	ForgeryHS256ClientSecret Forgery = "hs256-client-secret"
	// ForgeryHS256PublicKey (O3) is the RS/HS confusion attack: an HS256 MAC keyed with the
	// PKIX PEM bytes of the provider's RS256 public key, carrying that key's kid. go-oidc rejects it.
	ForgeryHS256PublicKey Forgery = "hs256-public-key"
	// ForgeryBadSignature (O4) is a genuine token, in the current alg, whose signature bytes
	// are corrupted. go-oidc rejects it (after one JWKS refetch).
	ForgeryBadSignature Forgery = "bad-signature"
	// ForgeryTamperedPayload (O4) is a genuine token whose payload was changed after signing
	// (sub and email now name an attacker). go-oidc rejects it.
	ForgeryTamperedPayload Forgery = "tampered-payload"
	// ForgeryUnknownKeySameKid (O4, also O14) is signed by a key the JWKS does not contain
	// but carries the kid of the current genuine key. go-oidc rejects it after one refetch.
	ForgeryUnknownKeySameKid Forgery = "unknown-key-same-kid"
	// ForgeryAlgRS384 (O5) is validly signed with RS384 by a key published in the JWKS:
	// its only defect is an algorithm outside scimflow's allow-list. go-oidc rejects it when
	// SupportedSigningAlgs is set; its default set would accept it.
	ForgeryAlgRS384 Forgery = "alg-rs384"
	// ForgeryAlgPS256 (O5) is ForgeryAlgRS384 with PS256.
	ForgeryAlgPS256 Forgery = "alg-ps256"

	// ForgeryWrongIssuer (O6) has iss "https://evil.example.com". go-oidc rejects it.
	ForgeryWrongIssuer Forgery = "wrong-issuer"
	// ForgeryIssuerTrailingSlash (O6) has the issuer with a trailing slash added (or removed),
	// which only exact string comparison catches. go-oidc rejects it.
	ForgeryIssuerTrailingSlash Forgery = "issuer-trailing-slash"

	// ForgeryWrongAudience (O7) has aud "another-client". go-oidc rejects it.
	ForgeryWrongAudience Forgery = "wrong-audience"
	// ForgeryAudienceMissing (O7) has no aud. go-oidc rejects it.
	ForgeryAudienceMissing Forgery = "audience-missing"
	// ForgeryMultiAudienceNoAZP (O7) has aud [client_id, "another-client"] and no azp.
	// go-oidc accepts it; the RP must reject multi-audience tokens without a valid azp.
	ForgeryMultiAudienceNoAZP Forgery = "multi-audience-no-azp"
	// ForgeryMultiAudienceWrongAZP (O7) has aud [client_id, "another-client"] and azp
	// "another-client". go-oidc accepts it; the RP must require azp == client_id.
	ForgeryMultiAudienceWrongAZP Forgery = "multi-audience-wrong-azp"
	// ForgeryWrongAZP (O7) has aud client_id but azp "another-client". go-oidc accepts it;
	// the RP must require azp == client_id when azp is present.
	ForgeryWrongAZP Forgery = "wrong-azp"

	// ForgerySubMissing (O8) has no sub. go-oidc accepts it (Subject ""); the RP must reject.
	ForgerySubMissing Forgery = "sub-missing"
	// ForgerySubEmpty (O8) has sub "". go-oidc accepts it; the RP must reject.
	ForgerySubEmpty Forgery = "sub-empty"
	// ForgerySubNull (O8) has sub null. go-oidc accepts it (Subject ""); the RP must reject.
	ForgerySubNull Forgery = "sub-null"
	// ForgerySubTooLong (O8) has a 256-character sub, one past OIDC's 255 limit. go-oidc
	// accepts it; the RP must reject.
	ForgerySubTooLong Forgery = "sub-too-long"

	// ForgeryIATMissing (O9) has no iat. go-oidc accepts it; the RP must require iat.
	ForgeryIATMissing Forgery = "iat-missing"
	// ForgeryIATFuture (O9) has iat ten minutes ahead (beyond a 60 s leeway) and an exp
	// after it. go-oidc accepts it; the RP must reject iat > now + skew.
	ForgeryIATFuture Forgery = "iat-future"
	// ForgeryIATTooOld (O9) has iat an hour ago and an unexpired exp. go-oidc accepts it;
	// the RP must reject iat < now − 10 min for a token fresh from the token endpoint.
	ForgeryIATTooOld Forgery = "iat-too-old"

	// ForgeryExpired (O10) expired two minutes ago (beyond a 60 s leeway); iat is five
	// minutes ago so no other check fires. go-oidc rejects it.
	ForgeryExpired Forgery = "expired"
	// ForgeryExpiredWithinLeeway (O10 boundary) expired 30 s ago. go-oidc, which has no exp
	// leeway, rejects it; scimflow's RP, with 60 s leeway, must accept it. It is not in Forgeries().
	ForgeryExpiredWithinLeeway Forgery = "expired-within-leeway"

	// ForgeryNBFFuture (O11) has nbf ten minutes ahead, beyond go-oidc's 5 min leeway. go-oidc rejects it.
	ForgeryNBFFuture Forgery = "nbf-future"

	// ForgeryNonceWrong (O12) carries a nonce other than the one in the authorization
	// request. go-oidc accepts it (nonce is the caller's job); the RP must reject.
	ForgeryNonceWrong Forgery = "nonce-wrong"
	// ForgeryNonceMissing (O12) carries no nonce. go-oidc accepts it; the RP must reject.
	ForgeryNonceMissing Forgery = "nonce-missing"

	// ForgeryNoKid (O13) is a genuine token without a kid header. The JWKS always holds
	// several keys, so this is "kid absent, multiple keys": go-oidc tries every key and
	// accepts; the RP documents its choice. It is not in Forgeries().
	ForgeryNoKid Forgery = "no-kid"
	// ForgeryUnknownKid (O14) is signed by a key the JWKS does not contain, with a fresh
	// random kid each time, so a negative kid cache alone does not stop refetches: only a
	// cooldown does. go-oidc rejects it after one JWKS fetch per token.
	ForgeryUnknownKid Forgery = "unknown-kid"

	// ForgeryEmbeddedJWK (O16) is signed by an attacker key carried in the header's jwk.
	// go-oidc rejects it: keys come only from jwks_uri.
	ForgeryEmbeddedJWK Forgery = "embedded-jwk"
	// ForgeryJKU (O16) is signed by an attacker key whose JWKS the header's jku points at
	// (served by this provider under /attacker/jwks, counted by AttackerFetches). go-oidc rejects it.
	ForgeryJKU Forgery = "jku"
	// ForgeryX5U (O16) is signed by an attacker key whose certificate the header's x5u
	// points at (/attacker/x5u/{alg}). go-oidc rejects it.
	ForgeryX5U Forgery = "x5u"
	// ForgeryX5C (O16) is signed by an attacker key whose self-signed certificate is in the
	// header's x5c. go-oidc rejects it.
	ForgeryX5C Forgery = "x5c"

	// ForgeryForeignKey (O17) keeps this provider's claims but is signed by the mix-up peer's
	// current key, with the peer's kid: a token signed by IdP B's key in IdP A's flow.
	// Needs SetMixUpPeer. go-oidc (A's verifier) rejects it.
	ForgeryForeignKey Forgery = "foreign-key"
	// ForgeryMixUp (O24) is a token from the mix-up peer: the peer's issuer, audience (its
	// client id) and key, with this flow's nonce and subject. B's verifier would accept it;
	// A's verifier (go-oidc) rejects it, at the signature already, since B's key is not in
	// A's JWKS. Needs SetMixUpPeer.
	ForgeryMixUp Forgery = "mix-up"
	// ForgeryPeerIssuer (O6 "iss of another configured IdP") is signed by this provider's
	// genuine key but names the mix-up peer's issuer. go-oidc rejects it on iss. Needs SetMixUpPeer.
	ForgeryPeerIssuer Forgery = "peer-issuer"

	// ForgeryBadAtHash (O19) carries an at_hash that does not match the access token.
	// go-oidc's Verify accepts it; IDToken.VerifyAccessToken fails; the RP must call it.
	ForgeryBadAtHash Forgery = "bad-at-hash"

	// ForgeryOversized (O20) is validly signed but carries a 1 MiB padding claim. go-oidc
	// accepts it when handed the string; golang.org/x/oauth2 fails the code exchange because
	// it reads at most 1 MiB of a token response. The RP must bound token size.
	ForgeryOversized Forgery = "oversized"
	// ForgeryManyDots (O20) is a genuine token followed by 100,000 dots (CVE-2025-27144).
	// go-oidc rejects it without the memory blow-up (go-jose ≥ 4.0.5).
	ForgeryManyDots Forgery = "many-dots"
	// ForgeryDeepNesting (O20) is validly signed but has a claim nested 20,000 arrays deep,
	// past encoding/json's depth limit. go-oidc rejects it when decoding the claims.
	ForgeryDeepNesting Forgery = "deep-nesting"

	// ForgeryEmailUnverified (O21) has email_verified false. go-oidc accepts it; the RP must
	// not use the email for linking or authorisation.
	ForgeryEmailUnverified Forgery = "email-unverified"
	// ForgeryEmailVerifiedString (O21) has email_verified as the string "false". go-oidc
	// accepts it; the RP must type-check strictly and not trust the email.
	ForgeryEmailVerifiedString Forgery = "email-verified-string"
)

// Forgeries returns every forgery a relying party following docs/design.md §8 must reject, in
// case order, so auth's tests can range over all of them and miss none when one is added.
// The boundary variants ForgeryNoKid and ForgeryExpiredWithinLeeway are not in it.
func Forgeries() []Forgery {
	return []Forgery{
		ForgeryAlgNone, ForgeryHS256ClientSecret, ForgeryHS256PublicKey,
		ForgeryBadSignature, ForgeryTamperedPayload, ForgeryUnknownKeySameKid,
		ForgeryAlgRS384, ForgeryAlgPS256,
		ForgeryWrongIssuer, ForgeryIssuerTrailingSlash, ForgeryPeerIssuer,
		ForgeryWrongAudience, ForgeryAudienceMissing, ForgeryMultiAudienceNoAZP, ForgeryMultiAudienceWrongAZP, ForgeryWrongAZP,
		ForgerySubMissing, ForgerySubEmpty, ForgerySubNull, ForgerySubTooLong,
		ForgeryIATMissing, ForgeryIATFuture, ForgeryIATTooOld,
		ForgeryExpired,
		ForgeryNBFFuture,
		ForgeryNonceWrong, ForgeryNonceMissing,
		ForgeryUnknownKid,
		ForgeryEmbeddedJWK, ForgeryJKU, ForgeryX5U, ForgeryX5C,
		ForgeryForeignKey,
		ForgeryBadAtHash,
		ForgeryOversized, ForgeryManyDots, ForgeryDeepNesting,
		ForgeryEmailUnverified, ForgeryEmailVerifiedString,
		ForgeryMixUp,
	}
}

// Case returns the id of the docs/design.md §9.4 case f serves ("O1" … "O24"), or "" for
// NoForgery or an unknown value; test names and failure messages use it.
func (f Forgery) Case() string {
	switch f {
	case ForgeryAlgNone:
		return "O1"
	case ForgeryHS256ClientSecret:
		return "O2"
	case ForgeryHS256PublicKey:
		return "O3"
	case ForgeryBadSignature, ForgeryTamperedPayload, ForgeryUnknownKeySameKid:
		return "O4"
	case ForgeryAlgRS384, ForgeryAlgPS256:
		return "O5"
	case ForgeryWrongIssuer, ForgeryIssuerTrailingSlash, ForgeryPeerIssuer:
		return "O6"
	case ForgeryWrongAudience, ForgeryAudienceMissing, ForgeryMultiAudienceNoAZP, ForgeryMultiAudienceWrongAZP, ForgeryWrongAZP:
		return "O7"
	case ForgerySubMissing, ForgerySubEmpty, ForgerySubNull, ForgerySubTooLong:
		return "O8"
	case ForgeryIATMissing, ForgeryIATFuture, ForgeryIATTooOld:
		return "O9"
	case ForgeryExpired, ForgeryExpiredWithinLeeway:
		return "O10"
	case ForgeryNBFFuture:
		return "O11"
	case ForgeryNonceWrong, ForgeryNonceMissing:
		return "O12"
	case ForgeryNoKid:
		return "O13"
	case ForgeryUnknownKid:
		return "O14"
	case ForgeryEmbeddedJWK, ForgeryJKU, ForgeryX5U, ForgeryX5C:
		return "O16"
	case ForgeryForeignKey:
		return "O17"
	case ForgeryBadAtHash:
		return "O19"
	case ForgeryOversized, ForgeryManyDots, ForgeryDeepNesting:
		return "O20"
	case ForgeryEmailUnverified, ForgeryEmailVerifiedString:
		return "O21"
	case ForgeryMixUp:
		return "O24"
	}
	return ""
}

func (f Forgery) check() error {
	if f == NoForgery || f.Case() != "" {
		return nil
	}
	return fmt.Errorf("unknown forgery %q", string(f))
}

// needsPeer reports whether f takes the mix-up peer's key or issuer.
func (f Forgery) needsPeer() bool {
	return f == ForgeryForeignKey || f == ForgeryMixUp || f == ForgeryPeerIssuer
}

// otherClient is the audience forged tokens name instead of, or next to, the real client.
const otherClient = "another-client"

// signState is what minting needs from the provider, copied under the lock so signing
// (slow for RSA) runs without it.
type signState struct {
	alg          string
	keys         map[string]*devidp.KeyPair
	issuer       string
	clientID     string
	clientSecret string
	ttl          time.Duration
	now          time.Time
	peer         *Provider
}

// signer is the algorithm, key and header one token is signed with.
type signer struct {
	alg    string
	key    any
	header map[string]any
	// hashAlg is the algorithm at_hash is computed for: the signing alg, or the provider's
	// current alg when the token is unsigned.
	hashAlg string
}

// mint builds and signs one ID token from claims (which it owns and may change), applying
// f. accessToken, when set, is bound through at_hash.
func (p *Provider) mint(claims map[string]any, f Forgery, accessToken string) (string, error) {
	if err := f.check(); err != nil {
		return "", err
	}
	st := p.signState()
	if f.needsPeer() && st.peer == nil {
		return "", fmt.Errorf("forgery %s needs a mix-up peer: call SetMixUpPeer", f)
	}
	s, err := p.chooseSigner(st, f)
	if err != nil {
		return "", err
	}
	if accessToken != "" {
		claims["at_hash"] = devidp.ATHash(s.hashAlg, accessToken)
	}
	forgeClaims(claims, f, st, s)
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	if f == ForgeryDeepNesting {
		// Spliced in as bytes: encoding/json refuses to marshal what it cannot parse back.
		const depth = 20000
		member := `"x_nested":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
		if len(claims) > 0 {
			member = "," + member
		}
		payload = append(payload[:len(payload)-1], member...)
	}
	token, err := compactJWS(s.header, payload, s.alg, s.key)
	if err != nil {
		return "", err
	}
	return forgeSerialization(token, f, claims)
}

// signState snapshots the provider for mint.
func (p *Provider) signState() signState {
	o := p.Options()
	p.mu.Lock()
	peer := p.peer
	p.mu.Unlock()
	return signState{
		alg:          p.Alg(),
		keys:         p.Keys(),
		issuer:       p.Issuer(),
		clientID:     o.ClientID,
		clientSecret: o.ClientSecret,
		ttl:          o.TokenTTL,
		now:          o.Now(),
		peer:         peer,
	}
}

func (p *Provider) chooseSigner(st signState, f Forgery) (signer, error) {
	header := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT"} }
	genuine := st.keys[st.alg]
	withKey := func(k *devidp.KeyPair, kid string) signer {
		h := header(k.Alg)
		if kid != "" {
			h["kid"] = kid
		}
		return signer{alg: k.Alg, key: k.Private, header: h, hashAlg: k.Alg}
	}
	switch f {
	case ForgeryAlgNone:
		return signer{alg: "none", header: header("none"), hashAlg: st.alg}, nil
	case ForgeryHS256ClientSecret:
		return signer{alg: "HS256", key: []byte(st.clientSecret), header: header("HS256"), hashAlg: "HS256"}, nil
	case ForgeryHS256PublicKey:
		rsaKey := st.keys["RS256"]
		pemBytes, err := publicKeyPEM(rsaKey)
		if err != nil {
			return signer{}, err
		}
		h := header("HS256")
		h["kid"] = rsaKey.Kid
		return signer{alg: "HS256", key: pemBytes, header: h, hashAlg: "HS256"}, nil
	case ForgeryAlgRS384:
		return withKey(st.keys["RS384"], st.keys["RS384"].Kid), nil
	case ForgeryAlgPS256:
		return withKey(st.keys["PS256"], st.keys["PS256"].Kid), nil
	case ForgeryNoKid:
		return withKey(genuine, ""), nil
	case ForgeryForeignKey, ForgeryMixUp:
		k := st.peer.CurrentKey()
		return withKey(k, k.Kid), nil
	case ForgeryUnknownKeySameKid, ForgeryUnknownKid, ForgeryEmbeddedJWK, ForgeryJKU, ForgeryX5U, ForgeryX5C:
		ak, cert, err := p.attackerKey(st.alg)
		if err != nil {
			return signer{}, err
		}
		s := withKey(ak, "")
		base := strings.TrimSuffix(st.issuer, "/")
		switch f {
		case ForgeryUnknownKeySameKid:
			s.header["kid"] = genuine.Kid
		case ForgeryUnknownKid:
			s.header["kid"] = "unknown-" + strings.ToLower(rand.Text()[:12])
		case ForgeryEmbeddedJWK:
			s.header["jwk"] = ak.JWK()
		case ForgeryJKU:
			s.header["kid"] = ak.Kid
			s.header["jku"] = base + "/attacker/jwks"
		case ForgeryX5U:
			s.header["x5u"] = base + "/attacker/x5u/" + ak.Alg
		case ForgeryX5C:
			s.header["x5c"] = []string{base64.StdEncoding.EncodeToString(cert)}
		}
		return s, nil
	}
	return withKey(genuine, genuine.Kid), nil
}

// forgeClaims applies the claim-level part of f.
func forgeClaims(c map[string]any, f Forgery, st signState, s signer) {
	now := st.now
	unix := func(t time.Time) int64 { return t.Unix() }
	switch f {
	case ForgeryWrongIssuer:
		c["iss"] = "https://evil.example.com"
	case ForgeryIssuerTrailingSlash:
		if strings.HasSuffix(st.issuer, "/") {
			c["iss"] = strings.TrimSuffix(st.issuer, "/")
		} else {
			c["iss"] = st.issuer + "/"
		}
	case ForgeryWrongAudience:
		c["aud"] = otherClient
	case ForgeryAudienceMissing:
		delete(c, "aud")
	case ForgeryMultiAudienceNoAZP:
		c["aud"] = []string{st.clientID, otherClient}
		delete(c, "azp")
	case ForgeryMultiAudienceWrongAZP:
		c["aud"] = []string{st.clientID, otherClient}
		c["azp"] = otherClient
	case ForgeryWrongAZP:
		c["aud"] = st.clientID
		c["azp"] = otherClient
	case ForgerySubMissing:
		delete(c, "sub")
	case ForgerySubEmpty:
		c["sub"] = ""
	case ForgerySubNull:
		c["sub"] = nil
	case ForgerySubTooLong:
		c["sub"] = strings.Repeat("s", 256)
	case ForgeryIATMissing:
		delete(c, "iat")
	case ForgeryIATFuture:
		iat := now.Add(10 * time.Minute)
		c["iat"], c["exp"] = unix(iat), unix(iat.Add(st.ttl))
	case ForgeryIATTooOld:
		c["iat"], c["exp"] = unix(now.Add(-time.Hour)), unix(now.Add(st.ttl))
	case ForgeryExpired:
		c["iat"], c["exp"] = unix(now.Add(-5*time.Minute)), unix(now.Add(-2*time.Minute))
	case ForgeryExpiredWithinLeeway:
		c["iat"], c["exp"] = unix(now.Add(-5*time.Minute)), unix(now.Add(-30*time.Second))
	case ForgeryNBFFuture:
		nbf := now.Add(10 * time.Minute)
		c["nbf"], c["exp"] = unix(nbf), unix(nbf.Add(st.ttl))
	case ForgeryNonceWrong:
		c["nonce"] = "forged-" + rand.Text()
	case ForgeryNonceMissing:
		delete(c, "nonce")
	case ForgeryBadAtHash:
		c["at_hash"] = devidp.ATHash(s.hashAlg, "not-the-access-token")
	case ForgeryOversized:
		c["x_padding"] = strings.Repeat("A", 1<<20)
	case ForgeryEmailUnverified:
		c["email_verified"] = false
	case ForgeryEmailVerifiedString:
		c["email_verified"] = "false"
	case ForgeryPeerIssuer:
		c["iss"] = st.peer.Issuer()
	case ForgeryMixUp:
		c["iss"], c["aud"] = st.peer.Issuer(), st.peer.Options().ClientID
	}
}

// forgeSerialization applies the forgeries that alter a finished token.
func forgeSerialization(token string, f Forgery, claims map[string]any) (string, error) {
	parts := strings.Split(token, ".")
	switch f {
	case ForgeryBadSignature:
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil {
			return "", fmt.Errorf("decode signature: %w", err)
		}
		sig[len(sig)/2] ^= 0xff
		parts[2] = b64(sig)
	case ForgeryTamperedPayload:
		tampered := make(map[string]any, len(claims))
		for k, v := range claims {
			tampered[k] = v
		}
		tampered["sub"] = "attacker"
		if _, ok := tampered["email"]; ok {
			tampered["email"] = "attacker@evil.example.com"
		}
		payload, err := json.Marshal(tampered)
		if err != nil {
			return "", fmt.Errorf("encode tampered claims: %w", err)
		}
		parts[1] = b64(payload)
	case ForgeryManyDots:
		return token + strings.Repeat(".", 100000), nil
	}
	return strings.Join(parts, "."), nil
}

// compactJWS serialises header and payload and signs them with alg and key: "none" and HS* (which
// only forgeries use) here, every genuine algorithm through devidp.
func compactJWS(header map[string]any, payload []byte, alg string, key any) (string, error) {
	if alg != "none" && !strings.HasPrefix(alg, "HS") {
		return devidp.SignCompact(header, payload, alg, key)
	}
	h, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("encode header: %w", err)
	}
	input := b64(h) + "." + b64(payload)
	if alg == "none" {
		return input + ".", nil
	}
	secret, ok := key.([]byte)
	if !ok {
		return "", fmt.Errorf("%s needs a byte key, got %T", alg, key)
	}
	mac := hmac.New(devidp.HashFor(alg).New, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil)), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// publicKeyPEM is the PKIX PEM encoding of k's public key: the bytes a naive HS256 verifier
// would use as MAC secret in the classic RS/HS confusion attack (case O3).
func publicKeyPEM(k *devidp.KeyPair) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k.Private.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// selfSignedCert makes a certificate for an attacker key, for the x5c and x5u forgeries (O16).
func selfSignedCert(k *devidp.KeyPair, now time.Time) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "oidctest attacker " + k.Kid},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Private.Public(), k.Private)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return der, nil
}

// copyClaims deep-copies claims through JSON, which also proves they are valid JSON.
func copyClaims(claims map[string]any) (map[string]any, error) {
	raw, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("encode claims: %w", err)
	}
	return devidp.DecodeClaims(raw)
}
