package access

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Domain is an app's domain split into its parts: a host (lower case, "*." for every subdomain
// below), an optional port, and a normalised path prefix ("/" when the app covers the whole host).
type Domain struct {
	Host     string // "grafana.corp.example" or "*.corp.example"
	Port     string // "" unless the domain names one; then only requests to that port match
	Path     string // normalised, "/" for the whole host
	Wildcard bool
}

// String is the canonical form, used to find two apps on the same domain and path.
func (d Domain) String() string {
	s := d.Host
	if d.Port != "" {
		s += ":" + d.Port
	}
	if d.Path != "/" {
		s += d.Path
	}
	return s
}

// hostKey is the key of the registry's host map.
func (d Domain) hostKey() string {
	if d.Port != "" {
		return d.Host + ":" + d.Port
	}
	return d.Host
}

// ParseDomain reads an app's domain: "host", "host:port", "*.host", each with an optional path
// prefix ("corp.example/admin"). No scheme, query or fragment.
func ParseDomain(s string) (Domain, error) {
	if strings.TrimSpace(s) == "" {
		return Domain{}, errors.New("required (a host with an optional path, e.g. \"grafana.corp.example\" or \"corp.example/admin\")")
	}
	if strings.Contains(s, "://") {
		return Domain{}, fmt.Errorf("%q: no scheme, just the host and an optional path", s)
	}
	if strings.ContainsAny(s, "?# \t") || hasControl(s) {
		return Domain{}, fmt.Errorf("%q: no query, fragment, white space or control characters", s)
	}
	hostport, path := s, "/"
	if i := strings.IndexByte(s, '/'); i >= 0 {
		hostport, path = s[:i], s[i:]
	}
	host, port, err := splitHostPort(strings.ToLower(hostport))
	if err != nil {
		return Domain{}, fmt.Errorf("%q: %v", s, err)
	}
	d := Domain{Host: host, Port: port, Path: NormalizePath(path)}
	name := host
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		d.Wildcard = true
		name = rest
	}
	if err := checkHostname(name); err != nil {
		return Domain{}, fmt.Errorf("%q: %v", s, err)
	}
	return d, nil
}

func splitHostPort(hp string) (host, port string, err error) {
	hp = strings.TrimSuffix(hp, ".")
	if strings.HasPrefix(hp, "[") { // IPv6 literal
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", "", errors.New("unclosed [ in host")
		}
		host, rest := hp[:end+1], hp[end+1:]
		if rest == "" {
			return host, "", nil
		}
		if rest[0] != ':' {
			return "", "", errors.New("junk after ]")
		}
		return host, rest[1:], checkPort(rest[1:])
	}
	if i := strings.LastIndexByte(hp, ':'); i >= 0 {
		host, port = strings.TrimSuffix(hp[:i], "."), hp[i+1:]
		return host, port, checkPort(port)
	}
	return hp, "", nil
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
		return fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	return nil
}

func checkHostname(h string) error {
	if strings.HasPrefix(h, "[") {
		return nil
	}
	if h == "" || len(h) > 253 {
		return errors.New("empty or too long host")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or too long label in host")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				if c == '*' {
					return errors.New("a wildcard is allowed only as the first label (\"*.corp.example\")")
				}
				return fmt.Errorf("character %q not allowed in a host (use the punycode form of international names)", c)
			}
		}
	}
	return nil
}

// NormalizeHost prepares a forwarded host for matching: the first of a comma-separated list,
// lower-cased, a trailing dot removed, split into host and port ("" when absent).
func NormalizeHost(h string) (host, port string) {
	if i := strings.IndexByte(h, ','); i >= 0 {
		h = h[:i]
	}
	h = strings.ToLower(strings.TrimSpace(h))
	host, port, err := splitHostPort(h)
	if err != nil {
		return h, ""
	}
	return host, port
}

// NormalizePath prepares a request URI's path for matching. The query and fragment are cut; a
// percent-escape of an unreserved character (RFC 3986 §2.3: letters, digits, "-", ".", "_", "~") is
// decoded and every other escape is kept with upper-case hex digits (so "%2F" is never a "/", and
// "%2f" and "%2F" compare equal), a '%' that starts no escape becomes "%25"; empty segments ("//") are collapsed; "." and ".." segments are
// resolved (".." never climbs above the root). The result starts with "/" and has no trailing "/"
// unless it is the root. Comparison is case-sensitive.
func NormalizePath(uri string) string {
	if i := strings.IndexAny(uri, "?#"); i >= 0 {
		uri = uri[:i]
	}
	if clean(uri) {
		return uri
	}
	var dec strings.Builder
	dec.Grow(len(uri))
	for i := 0; i < len(uri); i++ {
		c := uri[i]
		if c == '%' && i+2 < len(uri) && isHex(uri[i+1]) && isHex(uri[i+2]) {
			b := unhex(uri[i+1])<<4 | unhex(uri[i+2])
			if unreserved(b) {
				dec.WriteByte(b)
			} else {
				dec.WriteByte('%')
				dec.WriteByte(upperHex(uri[i+1]))
				dec.WriteByte(upperHex(uri[i+2]))
			}
			i += 2
			continue
		}
		if c == '%' {
			// A '%' that starts no escape is written as one ("%25"), so decoding a neighbour can
			// never turn it into a new escape ("%0%61" would otherwise become "%0a").
			dec.WriteString("%25")
			continue
		}
		dec.WriteByte(c)
	}
	segs := strings.Split(dec.String(), "/")
	out := segs[:0]
	for _, s := range segs {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// clean reports whether p is already normalised, so the common request costs no allocation.
func clean(p string) bool {
	if p == "/" {
		return true
	}
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] == '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%':
			return false
		case '/':
			if p[i+1] == '/' || p[i+1] == '.' {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func unreserved(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_' || b == '~'
}

// UnderPrefix reports whether the normalised path is the normalised prefix or below it, by whole
// segments: "/api" covers "/api" and "/api/x", not "/apix".
func UnderPrefix(path, prefix string) bool {
	if prefix == "/" {
		return true
	}
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}
