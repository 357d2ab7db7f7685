package oidctest

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/scimflow/scimflow/internal/devidp"
)

// The provider's configuration and users are devidp's; the aliases keep test code short.
type (
	// Options configures a Provider (devidp.Options).
	Options = devidp.Options
	// User is a registered user (devidp.User).
	User = devidp.User
	// Flow holds flow-level faults (devidp.Flow).
	Flow = devidp.Flow
)

// The client authentication methods the token endpoint understands.
const (
	ClientSecretBasic = devidp.ClientSecretBasic
	ClientSecretPost  = devidp.ClientSecretPost
)

// SupportedAlgs returns the algorithms genuine ID tokens are signed with: scimflow's allow-list.
func SupportedAlgs() []string { return devidp.SupportedAlgs() }

// forgeryOnlyAlgs are algorithms go-oidc supports but scimflow does not allow (case O5).
// Their keys are published in the JWKS so that the only defect of such a token is its alg.
func forgeryOnlyAlgs() []string {
	return []string{"RS384", "PS256"}
}

// Provider is a test OpenID provider: a devidp.Provider that can also forge.
type Provider struct {
	*devidp.Provider

	attackerFetches atomic.Int64

	mu      sync.Mutex // guards the following
	forgery Forgery
	peer    *Provider

	attackerMu    sync.Mutex // guards the following; separate so slow key generation never blocks mu
	attackerKeys  map[string]*devidp.KeyPair
	attackerCerts map[string][]byte
}

// New makes a provider with a fresh key for every algorithm in SupportedAlgs plus the forgery-only
// RS384 and PS256 keys. It does not listen: serve Handler yourself (and call SetIssuer) or use Start.
func New(opts Options) (*Provider, error) {
	opts.ExtraKeyAlgs = append(opts.ExtraKeyAlgs, forgeryOnlyAlgs()...)
	d, err := devidp.New(opts)
	if err != nil {
		return nil, fmt.Errorf("oidctest: %w", err)
	}
	return wrap(d), nil
}

// Start makes a provider and serves it on opts.Addr (default 127.0.0.1:0) until Close (see
// devidp.Start for the issuer it picks).
func Start(opts Options) (*Provider, error) {
	opts.ExtraKeyAlgs = append(opts.ExtraKeyAlgs, forgeryOnlyAlgs()...)
	d, err := devidp.Start(opts)
	if err != nil {
		return nil, fmt.Errorf("oidctest: %w", err)
	}
	return wrap(d), nil
}

func wrap(d *devidp.Provider) *Provider {
	p := &Provider{Provider: d, attackerKeys: map[string]*devidp.KeyPair{}, attackerCerts: map[string][]byte{}}
	d.SetMinter(p.mintNext)
	d.Mount("GET /attacker/jwks", p.handleAttackerJWKS)
	d.Mount("GET /attacker/x5u/{alg}", p.handleAttackerX5U)
	return p
}

// mintNext signs the ID token /token issues: with the pending forgery, once, else genuinely.
func (p *Provider) mintNext(claims map[string]any, accessToken string) (string, error) {
	p.mu.Lock()
	f := p.forgery
	p.forgery = NoForgery
	p.mu.Unlock()
	return p.mint(claims, f, accessToken)
}

// AttackerFetches returns how many times the attacker-controlled key URLs (the jku and x5u
// targets of the O16 forgeries) have been fetched. A correct relying party never fetches them.
func (p *Provider) AttackerFetches() int { return int(p.attackerFetches.Load()) }

// Forge makes the next ID token issued by /token bad in the way f names. It applies once;
// the token after it is genuine again. A second Forge before that token replaces the first.
func (p *Provider) Forge(f Forgery) error {
	if err := f.check(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if f.needsPeer() && p.peer == nil {
		return fmt.Errorf("forge %s: needs a mix-up peer: call SetMixUpPeer", f)
	}
	p.forgery = f
	return nil
}

// SetMixUpPeer names the second provider whose keys and issuer ForgeryForeignKey and
// ForgeryMixUp use: "IdP B" when p is "IdP A". The relying party under test should have
// both configured, so only its per-flow binding can stop the token.
func (p *Provider) SetMixUpPeer(peer *Provider) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peer = peer
}

// SignIDToken signs claims exactly as given (it adds nothing) after applying f, with the
// current key of the current algorithm unless f says otherwise. It returns an error rather
// than a bare string because claims may not be JSON and some forgeries need a peer.
func (p *Provider) SignIDToken(claims map[string]any, f Forgery) (string, error) {
	c, err := copyClaims(claims)
	if err != nil {
		return "", err
	}
	return p.mint(c, f, "")
}

// attackerKey returns a key for alg that is never published in the provider's JWKS,
// and a self-signed certificate for it.
func (p *Provider) attackerKey(alg string) (*devidp.KeyPair, []byte, error) {
	p.attackerMu.Lock()
	defer p.attackerMu.Unlock()
	if k, ok := p.attackerKeys[alg]; ok {
		return k, p.attackerCerts[alg], nil
	}
	k, err := devidp.GenerateKey(alg, "attacker-")
	if err != nil {
		return nil, nil, err
	}
	cert, err := selfSignedCert(k, p.Options().Now())
	if err != nil {
		return nil, nil, err
	}
	p.attackerKeys[alg], p.attackerCerts[alg] = k, cert
	return k, cert, nil
}

// handleAttackerJWKS serves the attacker keys a jku header points at. Only a relying party
// that trusts header-supplied key URLs ever asks for it.
func (p *Provider) handleAttackerJWKS(w http.ResponseWriter, r *http.Request) {
	p.attackerFetches.Add(1)
	p.attackerMu.Lock()
	keys := make(map[string]*devidp.KeyPair, len(p.attackerKeys))
	for alg, k := range p.attackerKeys {
		keys[alg] = k
	}
	p.attackerMu.Unlock()
	writeJSON(w, http.StatusOK, devidp.JWKS(keys))
}

// handleAttackerX5U serves the attacker certificate an x5u header points at.
func (p *Provider) handleAttackerX5U(w http.ResponseWriter, r *http.Request) {
	p.attackerFetches.Add(1)
	p.attackerMu.Lock()
	cert, ok := p.attackerCerts[r.PathValue("alg")]
	p.attackerMu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	_, _ = w.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
