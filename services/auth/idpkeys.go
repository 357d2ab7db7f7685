package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// refetchFloor is the shortest time between two failure-triggered fetches of one IdP document (its
// JWKS, or its discovery document) whatever the reason: a stream of tokens naming ever new kids
// costs the IdP at most one fetch a second. A caller that finds the floor not yet passed waits for
// it instead of failing, so a genuine login never fails because an unrelated refetch happened a
// moment before.
const refetchFloor = time.Second

// refetchGate decides when a verification miss may fetch an IdP document again (docs/design.md §8.2:
// go-oidc's RemoteKeySet refetches on every failure, so forged tokens would proxy 1:1 to the IdP).
//
// A miss is named by a key — the token's kid, or its alg for discovery. A key that was already
// missed within the cooldown (a fetch happened after the token arrived and still did not know it)
// fetches nothing; any other key fetches at once, subject only to refetchFloor. Callers that queue
// behind a fetch in progress use its result instead of fetching again.
type refetchGate struct {
	cooldown time.Duration
	now      func() time.Time // the cooldown's clock (tests move it); the floor uses the monotonic clock

	gen atomic.Uint64 // completed fetches; read before the cached document, bumped after storing one

	mu     sync.Mutex // serialises fetches; guards last and missed
	last   time.Time  // monotonic time of the latest fetch
	missed map[string]time.Time
}

// missedMax bounds the memory of missed keys; beyond it expired entries are dropped, then all.
const missedMax = 4096

// generation returns the count of completed fetches; read it before reading the cached document.
func (g *refetchGate) generation() uint64 { return g.gen.Load() }

// refresh runs fetch unless a fetch completed since the caller read seen (the caller should retry
// with that result: true, nothing fetched) or key was missed within the cooldown (false). It waits
// for the floor when needed. It reports whether newer data may be cached.
func (g *refetchGate) refresh(ctx context.Context, key string, seen uint64, fetch func(context.Context) error) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gen.Load() != seen {
		return true
	}
	if at, ok := g.missed[key]; ok && g.now().Sub(at) < g.cooldown {
		return false
	}
	if wait := refetchFloor - time.Since(g.last); !g.last.IsZero() && wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	g.last = time.Now()
	err := fetch(ctx)
	g.gen.Add(1)
	return err == nil
}

// miss records that key was not found in a document fetched after the caller's token arrived, so
// the same key fetches nothing again within the cooldown.
func (g *refetchGate) miss(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if g.missed == nil {
		g.missed = map[string]time.Time{}
	}
	if len(g.missed) >= missedMax {
		for k, at := range g.missed {
			if now.Sub(at) >= g.cooldown {
				delete(g.missed, k)
			}
		}
		if len(g.missed) >= missedMax {
			clear(g.missed)
		}
	}
	g.missed[key] = now
}

// keySet verifies ID-token signatures with keys from the IdP's jwks_uri only (never from jwk, jku,
// x5u or x5c headers). A token whose kid no cached key has refetches the JWKS (refetchGate), so an
// IdP's key rotation costs no failed login; a token whose kid is known but whose signature fails is
// a forgery and fetches nothing.
//
// With no kid in the header every cached key of the header's algorithm is tried (O13: the
// "test all possible keys" option of rp-id_token-kid-absent-multiple-jwks).
//
// The algorithm must be one of SupportedSigningAlgs and one the IdP advertises. An IdP that starts
// signing with another supported algorithm (Hydra switching RS256 → ES256) makes the next such
// token re-read discovery, gated like the JWKS (key = the alg), instead of failing every login
// until the IdP is saved again.
type keySet struct {
	url     string
	client  *http.Client
	onFetch func(err error)
	jwks    refetchGate
	keys    atomic.Pointer[[]jose.JSONWebKey]

	// advertised is the IdP's id_token_signing_alg_values_supported ∩ SupportedSigningAlgs; nil
	// (manual endpoints, or discovery that does not say) means every supported algorithm.
	advertised atomic.Pointer[[]string]
	// rediscover re-reads discovery and returns the advertised algorithms; nil without discovery.
	rediscover func(ctx context.Context) ([]string, error)
	disco      refetchGate
}

// allowedAlgs is the hard allow-list handed to go-jose: the advertised set is checked separately so
// that a token in a newly advertised algorithm can trigger a discovery re-read.
func allowedAlgs() []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	for _, a := range SupportedSigningAlgs() {
		out = append(out, jose.SignatureAlgorithm(a))
	}
	return out
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, allowedAlgs())
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	h := jws.Signatures[0].Header
	if err := k.checkAlg(ctx, h.Algorithm); err != nil {
		return nil, err
	}
	seen := k.jwks.generation()
	keys := k.cached()
	if p, ok := tryKeys(jws, keys); ok {
		return p, nil
	}
	if h.KeyID != "" && slices.ContainsFunc(keys, func(key jose.JSONWebKey) bool { return key.KeyID == h.KeyID }) {
		// A known kid that does not verify: a forged or tampered token, which a refetch cannot fix.
		return nil, errors.New("signature does not verify with the IdP's key " + h.KeyID)
	}
	if !k.jwks.refresh(ctx, "kid:"+h.KeyID, seen, k.fetchKeys) {
		return nil, errors.New("no JWKS key verifies the token (this kid was missed recently; refetch in cooldown)")
	}
	if p, ok := tryKeys(jws, k.cached()); ok {
		return p, nil
	}
	k.jwks.miss("kid:" + h.KeyID)
	return nil, errors.New("no JWKS key verifies the token")
}

func (k *keySet) cached() []jose.JSONWebKey {
	if p := k.keys.Load(); p != nil {
		return *p
	}
	return nil
}

// checkAlg accepts alg when the IdP advertises it, re-reading discovery (gated) when it does not.
func (k *keySet) checkAlg(ctx context.Context, alg string) error {
	seen := k.disco.generation()
	adv := k.advertised.Load()
	if adv == nil || slices.Contains(*adv, alg) {
		return nil
	}
	if k.rediscover != nil && k.disco.refresh(ctx, "alg:"+alg, seen, func(ctx context.Context) error {
		algs, err := k.rediscover(ctx)
		if err != nil {
			return err
		}
		k.advertised.Store(&algs)
		return nil
	}) {
		if adv := k.advertised.Load(); adv == nil || slices.Contains(*adv, alg) {
			return nil
		}
		k.disco.miss("alg:" + alg)
	}
	return fmt.Errorf("token signed with %s, which the IdP's discovery does not advertise (%v)", alg, *k.advertised.Load())
}

func tryKeys(jws *jose.JSONWebSignature, keys []jose.JSONWebKey) ([]byte, bool) {
	h := jws.Signatures[0].Header
	for i := range keys {
		key := &keys[i]
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if p, err := jws.Verify(key); err == nil {
			return p, true
		}
	}
	return nil, false
}

// fetchKeys fetches the JWKS and caches it.
func (k *keySet) fetchKeys(ctx context.Context) error {
	keys, err := fetchJWKS(ctx, k.client, k.url)
	if k.onFetch != nil {
		k.onFetch(err)
	}
	if err != nil {
		return err
	}
	k.keys.Store(&keys)
	return nil
}

// fetchJWKS reads the usable public keys of the JWKS at url.
func fetchJWKS(ctx context.Context, client *http.Client, url string) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks: %s", resp.Status)
	}
	// Decode key by key so one unparseable key (an unknown kty) does not discard the rest.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	var out []jose.JSONWebKey
	for _, raw := range doc.Keys {
		var key jose.JSONWebKey
		if json.Unmarshal(raw, &key) == nil && key.Valid() && key.IsPublic() {
			out = append(out, key)
		}
	}
	return out, nil
}
