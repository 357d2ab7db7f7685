package oidctest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // registers SHA-256 for crypto.Hash.New
	_ "crypto/sha512" // registers SHA-384 and SHA-512
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// keyPair is one signing key. Each algorithm has its own key, so every JWK carries exactly
// one alg and a relying party can be tested on algorithm/key binding.
type keyPair struct {
	alg  string
	kid  string
	priv crypto.Signer
}

// jwk is the public half as published in the JWKS.
func (k *keyPair) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: k.alg, Use: "sig"}
}

// generateKey makes a fresh key for alg with a kid no earlier key had. The kid is random,
// not a thumbprint, so tests can tell key generations apart at a glance.
func generateKey(alg, kidPrefix string) (*keyPair, error) {
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		return nil, fmt.Errorf("no key type for alg %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	kid := kidPrefix + strings.ToLower(alg) + "-" + strings.ToLower(rand.Text()[:12])
	return &keyPair{alg: alg, kid: kid, priv: priv}, nil
}

// generateKeys makes one key per algorithm, concurrently because 2048-bit RSA generation
// dominates New's cost and tests create many providers.
func generateKeys(algs []string, kidPrefix string) (map[string]*keyPair, error) {
	keys := make([]*keyPair, len(algs))
	errs := make([]error, len(algs))
	var wg sync.WaitGroup
	for i, alg := range algs {
		wg.Go(func() { keys[i], errs[i] = generateKey(alg, kidPrefix) })
	}
	wg.Wait()
	out := make(map[string]*keyPair, len(algs))
	for i, alg := range algs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out[alg] = keys[i]
	}
	return out, nil
}

// hashFor returns the hash an algorithm signs with; at_hash uses the same hash (OIDC Core §3.1.3.6).
func hashFor(alg string) crypto.Hash {
	switch {
	case strings.HasSuffix(alg, "384"):
		return crypto.SHA384
	case strings.HasSuffix(alg, "512"):
		return crypto.SHA512
	default:
		return crypto.SHA256
	}
}

// signBytes computes a JWS signature by hand. The provider signs with the standard library
// rather than go-jose's Signer because forgeries need headers go-jose refuses to produce
// (kid next to jwk, HS256 with a short key, alg none); genuine tokens take the same path so
// the tests, which verify them with go-jose through go-oidc, prove this code correct.
func signBytes(alg string, key any, input []byte) ([]byte, error) {
	if alg == "none" {
		return nil, nil
	}
	h := hashFor(alg)
	if strings.HasPrefix(alg, "HS") {
		secret, ok := key.([]byte)
		if !ok {
			return nil, fmt.Errorf("%s needs a byte key, got %T", alg, key)
		}
		mac := hmac.New(h.New, secret)
		mac.Write(input)
		return mac.Sum(nil), nil
	}
	d := h.New()
	d.Write(input)
	digest := d.Sum(nil)
	switch {
	case strings.HasPrefix(alg, "RS"):
		k, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s needs an RSA key, got %T", alg, key)
		}
		return rsa.SignPKCS1v15(rand.Reader, k, h, digest)
	case strings.HasPrefix(alg, "PS"):
		k, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s needs an RSA key, got %T", alg, key)
		}
		return rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case strings.HasPrefix(alg, "ES"):
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s needs an ECDSA key, got %T", alg, key)
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, fmt.Errorf("ecdsa sign: %w", err)
		}
		// JWS wants r‖s, each left-padded to the curve size (RFC 7518 §3.4), not ASN.1.
		size := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
		return sig, nil
	}
	return nil, fmt.Errorf("unsupported alg %q", alg)
}

// compactJWS serialises header and payload and signs them with alg and key.
func compactJWS(header map[string]any, payload []byte, alg string, key any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("encode header: %w", err)
	}
	input := b64(h) + "." + b64(payload)
	sig, err := signBytes(alg, key, []byte(input))
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", alg, err)
	}
	return input + "." + b64(sig), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// atHash is the at_hash of accessToken for a token signed with alg (OIDC Core §3.1.3.6).
func atHash(alg, accessToken string) string {
	h := hashFor(alg).New()
	h.Write([]byte(accessToken))
	sum := h.Sum(nil)
	return b64(sum[:len(sum)/2])
}

// publicKeyPEM is the PKIX PEM encoding of k's public key: the bytes a naive HS256 verifier
// would use as MAC secret in the classic RS/HS confusion attack (case O3).
func publicKeyPEM(k *keyPair) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// selfSignedCert makes a certificate for an attacker key, for the x5c and x5u forgeries (O16).
func selfSignedCert(k *keyPair, now time.Time) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "oidctest attacker " + k.kid},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.priv.Public(), k.priv)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return der, nil
}

// decodeClaims decodes a JSON object keeping numbers exact, so claims round-trip unchanged.
func decodeClaims(raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode claims: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// copyClaims deep-copies claims through JSON, which also proves they are valid JSON.
func copyClaims(claims map[string]any) (map[string]any, error) {
	raw, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("encode claims: %w", err)
	}
	return decodeClaims(raw)
}
