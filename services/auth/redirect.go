package auth

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// maxRedirectLen bounds a redirect target; anything longer falls back to "/".
const maxRedirectLen = 2048

// origin is a scheme and a host with an explicit port, the unit redirect allow-listing compares.
type origin struct{ scheme, host string }

// parseOrigin parses "https://app.example.com[:port]" into its canonical origin.
func parseOrigin(s string) (origin, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return origin{}, fmt.Errorf("%q is not an origin like https://app.example.com", s)
	}
	return originOf(u), nil
}

func originOf(u *url.URL) origin {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return origin{scheme: strings.ToLower(u.Scheme), host: net.JoinHostPort(host, port)}
}

// redirectPolicy decides where a browser may be sent after login or logout: a relative path on
// this host, or an absolute URL on an allow-listed origin. Everything else becomes "/" (docs/design.md
// §9.5, R11). The target is validated when the login starts and kept in the encrypted login transaction,
// so the callback never reads it from the query string.
type redirectPolicy struct {
	allowed map[origin]bool
}

func newRedirectPolicy(external string, allowed []string) redirectPolicy {
	p := redirectPolicy{allowed: map[origin]bool{}}
	if u, err := url.Parse(external); err == nil && u.Host != "" {
		p.allowed[originOf(u)] = true
	}
	for _, a := range allowed {
		if o, err := parseOrigin(a); err == nil {
			p.allowed[o] = true
		}
	}
	return p
}

// Target returns raw if it is a safe redirect target, else "/".
func (p redirectPolicy) Target(raw string) string {
	if raw == "" || len(raw) > maxRedirectLen || hasUnsafeChars(raw) {
		return "/"
	}
	// Decode once more than a browser would, so encoded slashes, backslashes and control
	// characters cannot smuggle a host past the checks below (/%2F%2Fevil.com, /%09/evil.com).
	decoded, err := url.PathUnescape(raw)
	if err != nil || hasUnsafeChars(decoded) {
		return "/"
	}
	if strings.HasPrefix(raw, "/") {
		if strings.HasPrefix(decoded, "//") || strings.HasPrefix(raw, "//") {
			return "/"
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
			return "/"
		}
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "/"
	}
	if strings.Contains(u.Host, "%") || !p.allowed[originOf(u)] {
		return "/"
	}
	return u.String()
}

// Allowed reports whether raw is an absolute URL on an allow-listed origin.
func (p redirectPolicy) Allowed(raw string) bool {
	t := p.Target(raw)
	return t != "/" && t == raw
}

// hasUnsafeChars reports control characters, backslashes and whitespace, none of which a
// legitimate redirect target needs and all of which browsers normalise in surprising ways.
func hasUnsafeChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x7f || c == '\\' {
			return true
		}
	}
	return false
}
