package access

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/scimflow/scimflow/person"
)

// Registry is a compiled, immutable set of apps: what auth consults on every /verify. Build a new one
// when the apps change; readers keep using the old one until they swap.
type Registry struct {
	apps  []*Compiled
	hosts map[string][]*Compiled // Domain.hostKey() → apps, longest path first
	// groups numbers every group name (lower-cased) a group selector of the registry names, so an
	// identity prepared for this registry (Prepare) answers a group selector with one bit test
	// instead of a map lookup: /verify evaluates up to hundreds of selectors per request.
	groups map[string]int
}

// Compiled is one app ready for matching and evaluation.
type Compiled struct {
	App             App
	Domain          Domain
	SessionDuration time.Duration // 0: no cap
	Index           int           // position in the registry (for per-app tables kept by callers)
	reg             *Registry     // nil for an app compiled on its own (CompileApp)
	bypass          []*cpolicy    // in precedence, then list order
	rules           []*cpolicy    // allow and deny, by precedence
}

type cpolicy struct {
	p       *Policy
	index   int // position in App.Policies
	paths   []string
	include []csel
	require []csel
	exclude []csel
}

// csel is a compiled selector: strings already normalised, the CIDR parsed.
type csel struct {
	kind byte
	a, b string // email | domain | lower(group) | claim name, idp | claim value
	idp  string
	cidr netip.Prefix
	gi   int // group selectors in a registry: the name's number in Registry.groups; -1 otherwise
}

const (
	selEveryone byte = iota + 1
	selEmail
	selDomain
	selGroup
	selOIDC
	selLogin
	selIP
)

// Compile validates every app and the set, and builds the registry. Apps are kept in the given order
// (Compiled.Index).
func Compile(apps []App) (*Registry, error) {
	var errs []string
	for _, a := range apps {
		for _, p := range a.Validate() {
			errs = append(errs, fmt.Sprintf("app %s: %s", a.ID, p))
		}
	}
	errs = append(errs, ValidateSet(apps)...)
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	r := &Registry{hosts: map[string][]*Compiled{}, groups: map[string]int{}}
	for i, a := range apps {
		c := compileApp(a)
		c.Index, c.reg = i, r
		r.apps = append(r.apps, c)
		k := c.Domain.hostKey()
		r.hosts[k] = append(r.hosts[k], c)
		for _, l := range [][]*cpolicy{c.bypass, c.rules} {
			for _, p := range l {
				for _, ss := range [][]csel{p.include, p.require, p.exclude} {
					for i := range ss {
						if ss[i].kind != selGroup {
							continue
						}
						n, ok := r.groups[ss[i].a]
						if !ok {
							n = len(r.groups)
							r.groups[ss[i].a] = n
						}
						ss[i].gi = n
					}
				}
			}
		}
	}
	for _, l := range r.hosts {
		slices.SortStableFunc(l, func(x, y *Compiled) int { return len(y.Domain.Path) - len(x.Domain.Path) })
	}
	return r, nil
}

// CompileApp compiles one valid app on its own (the tester's draft). It validates the app first.
func CompileApp(a App) (*Compiled, error) {
	if errs := a.Validate(); len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return compileApp(a), nil
}

func compileApp(a App) *Compiled {
	d, _ := ParseDomain(a.Domain)
	dur, _ := ParseDuration(a.SessionDuration)
	c := &Compiled{App: a, Domain: d, SessionDuration: dur}
	for i := range a.Policies {
		p := &c.App.Policies[i]
		cp := &cpolicy{p: p, index: i, include: compileSels(p.Include), require: compileSels(p.Require), exclude: compileSels(p.Exclude)}
		for _, path := range p.Paths {
			cp.paths = append(cp.paths, NormalizePath(path))
		}
		if p.Decision == Bypass {
			c.bypass = append(c.bypass, cp)
		} else {
			c.rules = append(c.rules, cp)
		}
	}
	slices.SortStableFunc(c.bypass, func(x, y *cpolicy) int { return x.p.Precedence - y.p.Precedence })
	slices.SortStableFunc(c.rules, func(x, y *cpolicy) int { return x.p.Precedence - y.p.Precedence })
	return c
}

func compileSels(ss []Selector) []csel {
	out := make([]csel, 0, len(ss))
	for _, s := range ss {
		c := csel{gi: -1}
		switch {
		case s.Everyone != nil:
			c.kind = selEveryone
		case s.Email != nil:
			c.kind, c.a = selEmail, person.NormalizeEmail(s.Email.Email)
		case s.EmailDomain != nil:
			c.kind, c.a = selDomain, strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s.EmailDomain.Domain), "@"))
		case s.Group != nil:
			c.kind, c.a, c.idp = selGroup, strings.ToLower(strings.TrimSpace(s.Group.Name)), s.Group.IdentityProviderID
		case s.OIDC != nil:
			c.kind, c.a, c.b, c.idp = selOIDC, s.OIDC.ClaimName, s.OIDC.ClaimValue, s.OIDC.IdentityProviderID
		case s.LoginMethod != nil:
			c.kind, c.idp = selLogin, s.LoginMethod.ID
		case s.IP != nil:
			c.kind = selIP
			c.cidr, _ = parsePrefix(s.IP.IP)
		}
		out = append(out, c)
	}
	return out
}

// Len is the number of apps; zero means no app is configured (every authenticated session passes).
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.apps)
}

// Apps returns the compiled apps in registry order.
func (r *Registry) Apps() []*Compiled {
	if r == nil {
		return nil
	}
	return r.apps
}

// Match finds the app for a request to host (as forwarded, any case, maybe with a port) and a
// normalised path (NormalizePath). The host is lower-cased and its port is ignored unless an app's
// domain names one; an exact host beats a wildcard, a longer wildcard beats a shorter one, and for
// the same host the longest path prefix wins. nil: no app matches.
func (r *Registry) Match(host, path string) *Compiled {
	if r == nil || len(r.apps) == 0 {
		return nil
	}
	h, port := NormalizeHost(host)
	try := func(name string) *Compiled {
		if port != "" {
			if c := firstUnder(r.hosts[name+":"+port], path); c != nil {
				return c
			}
		}
		return firstUnder(r.hosts[name], path)
	}
	if c := try(h); c != nil {
		return c
	}
	if strings.HasPrefix(h, "[") {
		return nil
	}
	for rest := h; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return nil
		}
		rest = rest[i+1:]
		if c := try("*." + rest); c != nil {
			return c
		}
	}
}

func firstUnder(l []*Compiled, path string) *Compiled {
	for _, c := range l {
		if UnderPrefix(path, c.Domain.Path) {
			return c
		}
	}
	return nil
}

// Identity is who a session (or a registry user, for the tester) stands for, prepared for
// evaluation: build it with NewIdentity.
type Identity struct {
	Email  string // normalised
	domain string
	IdP    string
	groups map[string]struct{} // lower-cased names
	Claims map[string]any
	bits   []uint64  // Registry.groups numbers of the groups, for bitsOf
	bitsOf *Registry // the registry bits was prepared for (Prepare)
}

// Prepare readies id for fast evaluation against r's apps: its groups become bits of r's group
// numbers. An identity prepared for another registry (or none) is still evaluated correctly, by
// name.
func (r *Registry) Prepare(id *Identity) {
	if r == nil {
		return
	}
	id.bits = make([]uint64, (len(r.groups)+63)/64)
	for g := range id.groups {
		if n, ok := r.groups[g]; ok {
			id.bits[n/64] |= 1 << (n % 64)
		}
	}
	id.bitsOf = r
}

// NewIdentity prepares an identity: the email normalised and its domain cut, the group names
// lower-cased into a set (group selectors compare case-insensitively).
func NewIdentity(email, idp string, groups []string, claims map[string]any) *Identity {
	id := &Identity{groups: make(map[string]struct{}, len(groups))}
	id.Reset(email, idp, groups, claims)
	return id
}

// Reset makes id the identity of other values, reusing its memory (the tester evaluates many people
// in a row).
func (id *Identity) Reset(email, idp string, groups []string, claims map[string]any) {
	if id.groups == nil {
		id.groups = make(map[string]struct{}, len(groups))
	}
	clear(id.groups)
	id.bits, id.bitsOf = id.bits[:0], nil
	id.Email, id.IdP, id.Claims, id.domain = person.NormalizeEmail(email), idp, claims, ""
	if i := strings.LastIndexByte(id.Email, '@'); i >= 0 {
		id.domain = id.Email[i+1:]
	}
	for _, g := range groups {
		id.groups[strings.ToLower(g)] = struct{}{}
	}
}

// ReadsClaims reports whether any policy of the app has an oidc selector, so a caller can skip
// decoding claims it would never read.
func (c *Compiled) ReadsClaims() bool {
	for _, l := range [][]*cpolicy{c.bypass, c.rules} {
		for _, p := range l {
			for _, ss := range [][]csel{p.include, p.require, p.exclude} {
				for _, s := range ss {
					if s.kind == selOIDC {
						return true
					}
				}
			}
		}
	}
	return false
}

// Result is the outcome of evaluating an app's policies.
type Result struct {
	Decision string  // Allow or Deny (Bypass from BypassFor)
	Policy   *Policy // the deciding policy; nil when none matched
	Index    int     // the deciding policy's position in App.Policies; -1 when none
	Reason   string  // the policy's name, or ReasonNoPolicy
}

// BypassFor returns the first bypass policy that lets the request through without an identity, or
// nil. ip is the client address (invalid when unknown: ip selectors do not match).
func (c *Compiled) BypassFor(path string, ip netip.Addr) *Result {
	for _, p := range c.bypass {
		if p.matches(path, ip, nil, c.reg) {
			return &Result{Decision: Bypass, Policy: p.p, Index: p.index, Reason: p.p.Name}
		}
	}
	return nil
}

// IdPAllowed reports whether a session from idp may use the app (allowed_idps empty: any).
func (c *Compiled) IdPAllowed(idp string) bool {
	return len(c.App.AllowedIdPs) == 0 || slices.Contains(c.App.AllowedIdPs, idp)
}

// Decide evaluates the allow and deny policies in precedence order: the first that matches decides;
// none matching is a deny (ReasonNoPolicy). Bypass policies, allowed_idps and session_duration are
// the caller's steps before this one (BypassFor, IdPAllowed, SessionDuration).
func (c *Compiled) Decide(path string, ip netip.Addr, id *Identity) Result {
	for _, p := range c.rules {
		if p.matches(path, ip, id, c.reg) {
			return Result{Decision: p.p.Decision, Policy: p.p, Index: p.index, Reason: p.p.Name}
		}
	}
	return Result{Decision: Deny, Index: -1, Reason: ReasonNoPolicy}
}

func (p *cpolicy) matches(path string, ip netip.Addr, id *Identity, reg *Registry) bool {
	if len(p.paths) > 0 {
		under := false
		for _, pre := range p.paths {
			if UnderPrefix(path, pre) {
				under = true
				break
			}
		}
		if !under {
			return false
		}
	}
	included := false
	for i := range p.include {
		if p.include[i].matches(ip, id, reg) {
			included = true
			break
		}
	}
	if !included {
		return false
	}
	for i := range p.require {
		if !p.require[i].matches(ip, id, reg) {
			return false
		}
	}
	for i := range p.exclude {
		if p.exclude[i].matches(ip, id, reg) {
			return false
		}
	}
	return true
}

// matches evaluates one selector; without an identity only everyone and ip can match.
func (s *csel) matches(ip netip.Addr, id *Identity, reg *Registry) bool {
	switch s.kind {
	case selEveryone:
		return true
	case selIP:
		return ip.IsValid() && s.cidr.Contains(ip.Unmap())
	}
	if id == nil {
		return false
	}
	switch s.kind {
	case selEmail:
		return id.Email == s.a
	case selDomain:
		return id.domain == s.a
	case selGroup:
		if s.idp != "" && s.idp != id.IdP {
			return false
		}
		if s.gi >= 0 && reg != nil && id.bitsOf == reg {
			return id.bits[s.gi/64]&(1<<(s.gi%64)) != 0
		}
		_, ok := id.groups[s.a]
		return ok
	case selOIDC:
		if s.idp != "" && s.idp != id.IdP {
			return false
		}
		return claimHas(id.Claims[s.a], s.b)
	case selLogin:
		return id.IdP == s.idp
	}
	return false
}

// claimHas reports whether a claim value is want or, for a multi-valued claim, holds want as one of
// its elements. Numbers and booleans compare in their JSON text form ("42", "true").
func claimHas(v any, want string) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if claimHas(e, want) {
				return true
			}
		}
		return false
	case []string:
		return slices.Contains(x, want)
	case bool:
		return (want == "true") == x && (want == "true" || want == "false")
	case float64, int, int64, uint64, float32:
		return fmt.Sprint(x) == want
	}
	return false
}
