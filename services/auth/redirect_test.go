package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/config"
)

// TestRedirectTarget (R11): every open-redirect vector of docs/design.md §9.5 falls back to "/", allowed
// relative paths and exact allow-listed origins are kept.
func TestRedirectTarget(t *testing.T) {
	t.Parallel()
	p := newRedirectPolicy("https://auth.example.com", []string{"https://allowed.example", "http://localhost:3000"})
	for _, tc := range []struct{ in, want string }{
		{"//evil.com", "/"},
		{"/\\evil.com", "/"},
		{"https://evil.com", "/"},
		{"https:evil.com", "/"},
		{"/%2F%2Fevil.com", "/"},
		{"/%2f%2fevil.com", "/"},
		{"/%5Cevil.com", "/"},
		{"/%09/evil.com", "/"},
		{"javascript:alert(1)", "/"},
		{"JavaScript:alert(1)", "/"},
		{"data:text/html,<script>", "/"},
		{"https://allowed.example@evil.com", "/"},
		{"https://allowed.example.evil.com", "/"},
		{"https://allowed.example:8443/", "/"},
		{"http://allowed.example/", "/"},
		{"/" + strings.Repeat("a", 3000), "/"},
		{"/path\r\nLocation: https://evil.com", "/"},
		{"/a\x00b", "/"},
		{" https://allowed.example/", "/"},
		{"https://allowed.example%2F@evil.com", "/"},
		{"\\\\evil.com", "/"},
		{"evil.com", "/"},
		{"", "/"},
		{"/", "/"},
		{"/dashboard?tab=1#x", "/dashboard?tab=1#x"},
		{"/a/b/c", "/a/b/c"},
		{"https://allowed.example/app?x=1", "https://allowed.example/app?x=1"},
		{"https://ALLOWED.example/", "https://ALLOWED.example/"},
		{"https://allowed.example:443/x", "https://allowed.example:443/x"},
		{"http://localhost:3000/cb", "http://localhost:3000/cb"},
		{"https://auth.example.com/get-identity", "https://auth.example.com/get-identity"},
	} {
		if got := p.Target(tc.in); got != tc.want {
			t.Errorf("Target(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestConfigValidate reports every problem at once and accepts the defaults.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v, want nil", err)
	}
	bad := DefaultConfig()
	bad.Listen = ""
	bad.ExternalURL = "not a url"
	bad.AllowedRedirectOrigins = []string{"https://ok.example/path"}
	bad.ClockSkew = config.Duration(5 * time.Minute)
	bad.KeyRotationInterval = config.Duration(time.Hour)
	err := bad.Validate()
	for _, want := range []string{"auth.listen", "auth.external_url", "allowed_redirect_origins", "clock_skew", "key_rotation_interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %s", err, want)
		}
	}
	if got := (Config{ReplicaID: "host.example.com"}).withDefaults().ReplicaID; got != "host-example-com" {
		t.Errorf("replica id = %q, want a durable-safe name", got)
	}
}
