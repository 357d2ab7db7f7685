// Package access decides who may reach which application: the model of access applications and their
// policies (the JSON of the admin API and of the access_apps KV bucket), its validation, the matching
// of a forwarded request to an application, and the evaluation of policies against an identity.
//
// It is pure domain logic shared by auth (the decision on every /verify) and identity-store (the
// policy tester), so both decide the same way. It imports nothing of the module but person/, reads no
// clock and keeps no state beyond what Compile builds.
package access

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Decisions a policy can take.
const (
	Allow  = "allow"
	Deny   = "deny"
	Bypass = "bypass"
)

// Reasons of decisions that no policy named.
const (
	ReasonNoPolicy      = "no_policy"        // no allow or deny policy matched: denied
	ReasonNoApplication = "no_application"   // applications exist but none matches the host and path
	ReasonIdPNotAllowed = "idp_not_allowed"  // the session's IdP is not in the app's allowed_idps
	ReasonSessionTooOld = "session_duration" // the session is older than the app's session_duration
)

// Limits that bound the work of one decision and the size of one app.
const (
	MaxPolicies  = 200
	MaxSelectors = 500 // per include, require or exclude list
	MaxPaths     = 100
	MaxNameLen   = 200
)

// App is an access application: a domain (host and optional path prefix) and the policies that decide
// who may reach it.
type App struct {
	ID              string    `json:"id,omitempty"`
	Name            string    `json:"name"`
	Domain          string    `json:"domain"`
	SessionDuration string    `json:"session_duration,omitempty"` // Go duration, e.g. "8h"
	AllowedIdPs     []string  `json:"allowed_idps,omitempty"`
	Policies        []Policy  `json:"policies"`
	CreatedAt       time.Time `json:"created_at,omitzero"`
	UpdatedAt       time.Time `json:"updated_at,omitzero"`
}

// Policy is one rule of an app. It matches when any Include, all Require and no Exclude selector
// match, and the request path is under one of Paths (when Paths is set).
type Policy struct {
	Name       string     `json:"name"`
	Decision   string     `json:"decision"`
	Precedence int        `json:"precedence,omitempty"`
	Include    []Selector `json:"include"`
	Require    []Selector `json:"require,omitempty"`
	Exclude    []Selector `json:"exclude,omitempty"`
	Paths      []string   `json:"paths,omitempty"`
}

// Selector is one condition on the identity or the request. Exactly one field is set.
type Selector struct {
	Everyone    *Everyone    `json:"everyone,omitempty"`
	Email       *EmailSel    `json:"email,omitempty"`
	EmailDomain *DomainSel   `json:"email_domain,omitempty"`
	Group       *GroupSel    `json:"group,omitempty"`
	OIDC        *OIDCSel     `json:"oidc,omitempty"`
	LoginMethod *LoginMethod `json:"login_method,omitempty"`
	IP          *IPSel       `json:"ip,omitempty"`

	// problems are found while decoding (unknown selector names, bad fields) and reported by
	// Validate with every other problem, instead of failing the decode at the first one.
	problems []string
}

// Everyone matches every request, with or without an identity.
type Everyone struct{}

// EmailSel matches one email address (normalised as person.NormalizeEmail).
type EmailSel struct {
	Email string `json:"email"`
}

// DomainSel matches every email address of one domain (exactly that domain, not its subdomains).
type DomainSel struct {
	Domain string `json:"domain"`
}

// GroupSel matches a group of the session, case-insensitively; with IdentityProviderID only groups of
// a session from that IdP.
type GroupSel struct {
	Name               string `json:"name"`
	IdentityProviderID string `json:"identity_provider_id,omitempty"`
}

// OIDCSel matches a claim the IdP's oidc_fields copied into the identity: equal to ClaimValue, or
// holding it as one element of a multi-valued claim.
type OIDCSel struct {
	ClaimName          string `json:"claim_name"`
	ClaimValue         string `json:"claim_value"`
	IdentityProviderID string `json:"identity_provider_id,omitempty"`
}

// LoginMethod matches sessions from one IdP.
type LoginMethod struct {
	ID string `json:"id"`
}

// IPSel matches the client address (as the trusted proxies report it) against a CIDR or one address.
type IPSel struct {
	IP string `json:"ip"`
}

var selectorNames = []string{"everyone", "email", "email_domain", "group", "oidc", "login_method", "ip"}

// UnmarshalJSON decodes a selector, recording unknown names and bad fields as problems for Validate.
func (s *Selector) UnmarshalJSON(b []byte) error {
	*s = Selector{}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		s.problems = append(s.problems, "want an object with one selector, e.g. {\"group\": {\"name\": \"Engineering\"}}")
		return nil
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	known := 0
	for _, k := range names {
		var err error
		switch k {
		case "everyone":
			s.Everyone = &Everyone{}
			err = strict(m[k], s.Everyone)
		case "email":
			s.Email = &EmailSel{}
			err = strict(m[k], s.Email)
		case "email_domain":
			s.EmailDomain = &DomainSel{}
			err = strict(m[k], s.EmailDomain)
		case "group":
			s.Group = &GroupSel{}
			err = strict(m[k], s.Group)
		case "oidc":
			s.OIDC = &OIDCSel{}
			err = strict(m[k], s.OIDC)
		case "login_method":
			s.LoginMethod = &LoginMethod{}
			err = strict(m[k], s.LoginMethod)
		case "ip":
			s.IP = &IPSel{}
			err = strict(m[k], s.IP)
		default:
			s.problems = append(s.problems, fmt.Sprintf("unknown selector %q (want one of %s)", k, strings.Join(selectorNames, ", ")))
			continue
		}
		known++
		if err != nil {
			s.problems = append(s.problems, fmt.Sprintf("%s: %v", k, err))
		}
	}
	if known != 1 && len(s.problems) == 0 {
		s.problems = append(s.problems, fmt.Sprintf("want exactly one selector, got %d", known))
	}
	return nil
}

func strict(raw json.RawMessage, v any) error {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return errors.New("want an object, got null")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Kind names the one selector that is set ("" if none).
func (s Selector) Kind() string {
	switch {
	case s.Everyone != nil:
		return "everyone"
	case s.Email != nil:
		return "email"
	case s.EmailDomain != nil:
		return "email_domain"
	case s.Group != nil:
		return "group"
	case s.OIDC != nil:
		return "oidc"
	case s.LoginMethod != nil:
		return "login_method"
	case s.IP != nil:
		return "ip"
	}
	return ""
}

// needsIdentity reports whether the selector reads the identity (bypass policies may not).
func (s Selector) needsIdentity() bool {
	return s.Everyone == nil && s.IP == nil
}

// ParseApp decodes an app body strictly (unknown fields are an error; selector problems are left for
// Validate so that every one of them is reported at once).
func ParseApp(raw []byte) (App, error) {
	var a App
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return App{}, fmt.Errorf("invalid JSON body: %w", err)
	}
	if dec.More() {
		return App{}, errors.New("invalid JSON body: trailing data")
	}
	return a, nil
}

// ParseDuration reads session_duration: a Go duration ("8h", "30m"), positive; empty means none.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. \"8h\", \"30m\")", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}

// Validate returns every problem of the app on its own (each as "field: message"). Problems that need
// the other apps (two apps on the same domain and path) are ValidateSet's.
func (a App) Validate() []string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if msg := checkName(a.Name); msg != "" {
		add("name: %s", msg)
	}
	if _, err := ParseDomain(a.Domain); err != nil {
		add("domain: %v", err)
	}
	if _, err := ParseDuration(a.SessionDuration); err != nil {
		add("session_duration: %v", err)
	}
	for i, id := range a.AllowedIdPs {
		if strings.TrimSpace(id) == "" {
			add("allowed_idps[%d]: empty IdP id", i)
		}
	}
	if len(a.Policies) > MaxPolicies {
		add("policies: %d policies, at most %d", len(a.Policies), MaxPolicies)
	}
	precedence := map[int]int{}
	names := map[string]int{}
	for i, p := range a.Policies {
		at := fmt.Sprintf("policies[%d]", i)
		if msg := checkName(p.Name); msg != "" {
			add("%s.name: %s", at, msg)
		} else if j, dup := names[p.Name]; dup {
			add("%s.name: %q is also the name of policies[%d]; deny reasons and metrics name policies, so names are unique", at, p.Name, j)
		} else {
			names[p.Name] = i
		}
		switch p.Decision {
		case Allow, Deny:
			if p.Precedence < 1 {
				add("%s.precedence: required for %s policies, an integer >= 1 (lower is evaluated first)", at, p.Decision)
			} else if j, dup := precedence[p.Precedence]; dup {
				add("%s.precedence: %d is also the precedence of policies[%d]", at, p.Precedence, j)
			} else {
				precedence[p.Precedence] = i
			}
		case Bypass:
			if p.Precedence < 0 {
				add("%s.precedence: must not be negative", at)
			}
		default:
			add("%s.decision: %q is not one of allow, deny, bypass", at, p.Decision)
		}
		if len(p.Include) == 0 {
			add("%s.include: at least one selector (use {\"everyone\": {}} to match everyone)", at)
		}
		for _, l := range []struct {
			name string
			sels []Selector
		}{{"include", p.Include}, {"require", p.Require}, {"exclude", p.Exclude}} {
			if len(l.sels) > MaxSelectors {
				add("%s.%s: %d selectors, at most %d", at, l.name, len(l.sels), MaxSelectors)
			}
			for j, s := range l.sels {
				sat := fmt.Sprintf("%s.%s[%d]", at, l.name, j)
				for _, msg := range s.check() {
					add("%s: %s", sat, msg)
				}
				if p.Decision == Bypass && s.Kind() != "" && s.needsIdentity() {
					add("%s: a bypass policy is evaluated without an identity; only everyone and ip selectors are allowed, not %s", sat, s.Kind())
				}
			}
		}
		if len(p.Paths) > MaxPaths {
			add("%s.paths: %d paths, at most %d", at, len(p.Paths), MaxPaths)
		}
		for j, path := range p.Paths {
			if !strings.HasPrefix(path, "/") {
				add("%s.paths[%d]: %q must start with /", at, j, path)
			} else if strings.ContainsAny(path, "?#") || hasControl(path) {
				add("%s.paths[%d]: %q must be a path without query, fragment or control characters", at, j, path)
			}
		}
	}
	return errs
}

// check returns the problems of one selector.
func (s Selector) check() []string {
	if len(s.problems) > 0 {
		return s.problems
	}
	var errs []string
	switch {
	case s.Email != nil:
		if e := strings.TrimSpace(s.Email.Email); e == "" || strings.Count(e, "@") != 1 || hasControl(e) {
			errs = append(errs, fmt.Sprintf("email.email: %q is not an email address", s.Email.Email))
		}
	case s.EmailDomain != nil:
		d := strings.TrimSpace(s.EmailDomain.Domain)
		if d == "" || strings.ContainsAny(d, "@ /") || hasControl(d) {
			errs = append(errs, fmt.Sprintf("email_domain.domain: %q is not a domain", s.EmailDomain.Domain))
		}
	case s.Group != nil:
		if strings.TrimSpace(s.Group.Name) == "" {
			errs = append(errs, "group.name: required")
		}
	case s.OIDC != nil:
		if strings.TrimSpace(s.OIDC.ClaimName) == "" {
			errs = append(errs, "oidc.claim_name: required")
		}
	case s.LoginMethod != nil:
		if strings.TrimSpace(s.LoginMethod.ID) == "" {
			errs = append(errs, "login_method.id: required")
		}
	case s.IP != nil:
		if _, err := parsePrefix(s.IP.IP); err != nil {
			errs = append(errs, fmt.Sprintf("ip.ip: %v", err))
		}
	case s.Everyone != nil:
	default:
		errs = append(errs, "empty selector")
	}
	return errs
}

// parsePrefix reads a CIDR or a single address (as its /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8)", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4 networks in IPv4 form", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkName(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return "required"
	case len(s) > MaxNameLen:
		return fmt.Sprintf("longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(s) || hasControl(s):
		return "must be valid UTF-8 without control characters"
	}
	return ""
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0
}

// ValidateSet returns the problems of a set of apps taken together: two apps on the same domain and
// path (after normalisation) could never both be matched.
func ValidateSet(apps []App) []string {
	var errs []string
	seen := map[string]string{}
	for _, a := range apps {
		d, err := ParseDomain(a.Domain)
		if err != nil {
			continue
		}
		k := d.String()
		if other, dup := seen[k]; dup {
			errs = append(errs, fmt.Sprintf("domain: %q is already the domain of application %s", k, other))
			continue
		}
		name := a.ID
		if name == "" {
			name = fmt.Sprintf("%q", a.Name)
		}
		seen[k] = name
	}
	return errs
}
