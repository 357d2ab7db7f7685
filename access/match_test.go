package access

import (
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/api", "/api"},
		{"/api/", "/api"},
		{"/api?x=1", "/api"},
		{"/api#frag", "/api"},
		{"//api///x//", "/api/x"},
		{"/a/./b/../c", "/a/c"},
		{"/../../etc", "/etc"},
		{"/api/%2e%2e/admin", "/admin"},      // %2e is unreserved: decoded, then resolved
		{"/%61pi/x", "/api/x"},               // %61 = 'a'
		{"/%7Euser", "/~user"},               // ~ is unreserved
		{"/api%2Fx", "/api%2Fx"},             // %2F is reserved: kept, never a separator
		{"/api%2fx", "/api%2Fx"},             // hex case normalised
		{"/a%20b", "/a%20b"},                 // space stays escaped
		{"/a%zz", "/a%25zz"},                 // a lone % is escaped
		{"/a%4", "/a%254"},                   // truncated escape: the % is escaped
		{"/%0%61", "/%250a"},                 // decoding never creates a new escape
		{"/API", "/API"},                     // case-sensitive
		{"api", "/api"},                      // relative: rooted
		{"/.well-known/x", "/.well-known/x"}, // a dot-prefixed segment is not a dot segment
		{"/a/..", "/"},
		{"/a/%2E/b", "/a/b"},
	} {
		if got := NormalizePath(tc.in); got != tc.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestUnderPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path, prefix string
		want         bool
	}{
		{"/api", "/api", true},
		{"/api/x", "/api", true},
		{"/apix", "/api", false},
		{"/ap", "/api", false},
		{"/anything", "/", true},
		{"/", "/", true},
		{"/Api/x", "/api", false},
	} {
		if got := UnderPrefix(tc.path, tc.prefix); got != tc.want {
			t.Errorf("UnderPrefix(%q, %q) = %v, want %v", tc.path, tc.prefix, got, tc.want)
		}
	}
}

func TestParseDomain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"grafana.corp.example", "grafana.corp.example", false},
		{"Grafana.Corp.Example", "grafana.corp.example", false},
		{"corp.example/admin/", "corp.example/admin", false},
		{"corp.example/a//b/../c", "corp.example/a/c", false},
		{"*.corp.example", "*.corp.example", false},
		{"app.example:8443/x", "app.example:8443/x", false},
		{"[::1]:8080", "[::1]:8080", false},
		{"", "", true},
		{"https://grafana.corp.example", "", true},
		{"a.*.example", "", true},
		{"corp.example/a?b", "", true},
		{"corp.example:99999", "", true},
		{"corp.example:0", "", true},
		{"bad host", "", true},
		{"ex ample.com", "", true},
		{"a..b", "", true},
	} {
		d, err := ParseDomain(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseDomain(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && d.String() != tc.want {
			t.Errorf("ParseDomain(%q) = %q, want %q", tc.in, d.String(), tc.want)
		}
	}
}

func appOn(id, domain string) App {
	return App{ID: id, Name: id, Domain: domain, Policies: []Policy{{Name: "all", Decision: Allow, Precedence: 1, Include: []Selector{{Everyone: &Everyone{}}}}}}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	r, err := Compile([]App{
		appOn("exact", "grafana.corp.example"),
		appOn("exact-admin", "grafana.corp.example/admin"),
		appOn("wild", "*.corp.example"),
		appOn("wild-deep", "*.eu.corp.example"),
		appOn("wild-api", "*.corp.example/api"),
		appOn("apex-path", "corp.example/admin"),
		appOn("port", "grafana.corp.example:8443"),
		appOn("v6", "[::1]"),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, uri, want string }{
		{"grafana.corp.example", "/", "exact"},
		{"GRAFANA.corp.example", "/d/x", "exact"},
		{"grafana.corp.example.", "/", "exact"},
		{"grafana.corp.example:443", "/", "exact"}, // port ignored unless an app names one
		{"grafana.corp.example:8443", "/", "port"},
		{"grafana.corp.example:8443", "/admin", "port"}, // the port app covers its whole host
		{"grafana.corp.example", "/admin", "exact-admin"},
		{"grafana.corp.example", "/admin/users?x=1", "exact-admin"},
		{"grafana.corp.example", "/adminx", "exact"},
		{"grafana.corp.example", "/x/../admin", "exact-admin"},
		{"grafana.corp.example", "//admin", "exact-admin"},
		{"grafana.corp.example", "/%61dmin", "exact-admin"},
		{"grafana.corp.example", "/Admin", "exact"},
		{"other.corp.example", "/", "wild"},
		{"a.b.corp.example", "/", "wild"},
		{"x.eu.corp.example", "/", "wild-deep"},
		{"other.corp.example", "/api/v1", "wild-api"},
		{"corp.example", "/", ""}, // the wildcard does not cover the apex
		{"corp.example", "/admin/x", "apex-path"},
		{"evil-corp.example", "/", ""},
		{"corp.example.evil", "/", ""},
		{"[::1]:9000", "/", "v6"},
		{"grafana.corp.example, evil.example", "/", "exact"},
		{"", "/", ""},
	} {
		c := r.Match(tc.host, NormalizePath(tc.uri))
		got := ""
		if c != nil {
			got = c.App.ID
		}
		if got != tc.want {
			t.Errorf("Match(%q, %q) = %q, want %q", tc.host, tc.uri, got, tc.want)
		}
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "//a/../b", "/%2e%2E/x", "/a%2fb", "/a/./b/", "a", "/%zz", "/%", "/.../..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p := NormalizePath(in)
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("NormalizePath(%q) = %q: not rooted", in, p)
		}
		if p != "/" && strings.HasSuffix(p, "/") {
			t.Fatalf("NormalizePath(%q) = %q: trailing slash", in, p)
		}
		if strings.Contains(p, "//") || strings.ContainsAny(p, "?#") {
			t.Fatalf("NormalizePath(%q) = %q: empty segment, query or fragment", in, p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("NormalizePath(%q) = %q: dot segment left", in, p)
			}
		}
		if q := NormalizePath(p); q != p {
			t.Fatalf("NormalizePath not idempotent: %q → %q → %q", in, p, q)
		}
	})
}

func FuzzMatch(f *testing.F) {
	r, err := Compile([]App{appOn("a", "app.example/api"), appOn("b", "*.example"), appOn("c", "app.example")})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/api", "/api/x", "/apix", "/%61pi", "//api", "/x/../api"} {
		f.Add("app.example", s)
	}
	f.Fuzz(func(t *testing.T, host, uri string) {
		p := NormalizePath(uri)
		c := r.Match(host, p)
		if c == nil {
			return
		}
		h, _ := NormalizeHost(host)
		switch c.App.ID {
		case "a":
			if h != "app.example" || !UnderPrefix(p, "/api") {
				t.Fatalf("Match(%q, %q) = a; the host or path does not match", host, uri)
			}
		case "c":
			if h != "app.example" || UnderPrefix(p, "/api") {
				t.Fatalf("Match(%q, %q) = c; a longer path app should have won", host, uri)
			}
		case "b":
			if !strings.HasSuffix(h, ".example") || h == "app.example" {
				t.Fatalf("Match(%q, %q) = b; exact host should win or the wildcard does not apply", host, uri)
			}
		}
	})
}
