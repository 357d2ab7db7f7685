package devidp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // registers SHA-256 for crypto.Hash.New
	_ "crypto/sha512" // registers SHA-384 and SHA-512
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	jose "github.com/go-jose/go-jose/v4"
)

// KeyPair is one signing key. Each algorithm has its own key, so every JWK carries exactly
// one alg and a relying party can be tested on algorithm/key binding.
type KeyPair struct {
	Alg     string
	Kid     string
	Private crypto.Signer
}

// JWK is the public half as published in the JWKS.
func (k *KeyPair) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.Kid, Algorithm: k.Alg, Use: "sig"}
}

// GenerateKey makes a fresh key for alg with a kid no earlier key had. The kid is random,
// not a thumbprint, so tests can tell key generations apart at a glance.
func GenerateKey(alg, kidPrefix string) (*KeyPair, error) {
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
	return &KeyPair{Alg: alg, Kid: kid, Private: priv}, nil
}

// GenerateKeys makes one key per algorithm, concurrently because 2048-bit RSA generation
// dominates New's cost and tests create many providers.
func GenerateKeys(algs []string, kidPrefix string) (map[string]*KeyPair, error) {
	keys := make([]*KeyPair, len(algs))
	errs := make([]error, len(algs))
	var wg sync.WaitGroup
	for i, alg := range algs {
		wg.Go(func() { keys[i], errs[i] = GenerateKey(alg, kidPrefix) })
	}
	wg.Wait()
	out := make(map[string]*KeyPair, len(algs))
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

// signBytes computes a JWS signature by hand with the standard library rather than go-jose's
// Signer, so a test kit can sign any header it needs with the same code; the tests, which verify
// genuine tokens with go-jose through go-oidc, prove this code correct.
func signBytes(alg string, key any, input []byte) ([]byte, error) {
	h := hashFor(alg)
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

// SignCompact serialises header and payload and signs them with alg (an RS, PS or ES algorithm)
// and key.
func SignCompact(header map[string]any, payload []byte, alg string, key any) (string, error) {
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

// HashFor returns the hash alg signs with, which at_hash also uses (OIDC Core §3.1.3.6).
func HashFor(alg string) crypto.Hash { return hashFor(alg) }

// ATHash is the at_hash of accessToken for a token signed with alg (OIDC Core §3.1.3.6).
func ATHash(alg, accessToken string) string {
	h := hashFor(alg).New()
	h.Write([]byte(accessToken))
	sum := h.Sum(nil)
	return b64(sum[:len(sum)/2])
}

// DecodeClaims decodes a JSON object keeping numbers exact, so claims round-trip unchanged.
func DecodeClaims(raw []byte) (map[string]any, error) {
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
