package access

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// issueApp is the example of docs/access-policies.md.
const issueApp = `{
  "name": "Grafana",
  "domain": "grafana.corp.example",
  "session_duration": "8h",
  "allowed_idps": ["okta"],
  "policies": [
    {"name": "on-call bypass for health", "decision": "bypass",
     "include": [{"everyone": {}}], "paths": ["/api/health"]},
    {"name": "contractors out", "decision": "deny", "precedence": 1,
     "include": [{"email_domain": {"domain": "contractor.example"}}]},
    {"name": "engineers", "decision": "allow", "precedence": 2,
     "include": [{"group": {"name": "Engineering"}}, {"email": {"email": "cto@corp.example"}}],
     "require": [{"login_method": {"id": "okta"}}],
     "exclude": [{"oidc": {"claim_name": "employment", "claim_value": "terminated"}}]}
  ]
}`

func mustApp(t *testing.T, raw string) *Compiled {
	t.Helper()
	a, err := ParseApp([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	c, err := CompileApp(a)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecideIssueExample(t *testing.T) {
	t.Parallel()
	c := mustApp(t, issueApp)
	if c.SessionDuration.Hours() != 8 {
		t.Errorf("SessionDuration = %v, want 8h", c.SessionDuration)
	}
	if b := c.BypassFor("/api/health", netip.Addr{}); b == nil || b.Reason != "on-call bypass for health" {
		t.Errorf("BypassFor(/api/health) = %v, want the bypass policy", b)
	}
	if b := c.BypassFor("/api/healthz", netip.Addr{}); b != nil {
		t.Errorf("BypassFor(/api/healthz) = %v, want nil (segment prefix)", b)
	}
	if !c.IdPAllowed("okta") || c.IdPAllowed("entra") {
		t.Errorf("IdPAllowed: okta %v, entra %v; want true, false", c.IdPAllowed("okta"), c.IdPAllowed("entra"))
	}
	for _, tc := range []struct {
		name string
		id   *Identity
		want string // reason
		dec  string
	}{
		{"engineer", NewIdentity("ann@corp.example", "okta", []string{"ENGINEERING"}, nil), "engineers", Allow},
		{"cto by email", NewIdentity(" CTO@corp.example", "okta", nil, nil), "engineers", Allow},
		{"contractor engineer", NewIdentity("bob@contractor.example", "okta", []string{"Engineering"}, nil), "contractors out", Deny},
		{"contractor subdomain is not the domain", NewIdentity("bob@x.contractor.example", "okta", nil, nil), ReasonNoPolicy, Deny},
		{"engineer via other idp fails require", NewIdentity("ann@corp.example", "entra", []string{"Engineering"}, nil), ReasonNoPolicy, Deny},
		{"terminated excluded", NewIdentity("ann@corp.example", "okta", []string{"Engineering"}, map[string]any{"employment": "terminated"}), ReasonNoPolicy, Deny},
		{"terminated in a list excluded", NewIdentity("ann@corp.example", "okta", []string{"Engineering"}, map[string]any{"employment": []any{"x", "terminated"}}), ReasonNoPolicy, Deny},
		{"sales", NewIdentity("sam@corp.example", "okta", []string{"Sales"}, nil), ReasonNoPolicy, Deny},
		{"no identity", nil, ReasonNoPolicy, Deny},
	} {
		r := c.Decide("/", netip.Addr{}, tc.id)
		if r.Reason != tc.want || r.Decision != tc.dec {
			t.Errorf("%s: Decide = %s/%s, want %s/%s", tc.name, r.Decision, r.Reason, tc.dec, tc.want)
		}
	}
}

func TestSelectors(t *testing.T) {
	t.Parallel()
	id := NewIdentity("Ann@Corp.Example", "entra", []string{"Engineering", "On-Call"},
		map[string]any{"roles": []any{"Admin", "Reader"}, "dept": "R&D", "level": float64(7), "mfa": true})
	ip := netip.MustParseAddr("10.1.2.3")
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{`{"everyone":{}}`, true},
		{`{"email":{"email":"ann@corp.example"}}`, true},
		{`{"email":{"email":"bob@corp.example"}}`, false},
		{`{"email_domain":{"domain":"CORP.example"}}`, true},
		{`{"email_domain":{"domain":"example"}}`, false},
		{`{"group":{"name":"engineering"}}`, true},
		{`{"group":{"name":"Engineering","identity_provider_id":"entra"}}`, true},
		{`{"group":{"name":"Engineering","identity_provider_id":"okta"}}`, false},
		{`{"group":{"name":"Sales"}}`, false},
		{`{"oidc":{"claim_name":"roles","claim_value":"Admin"}}`, true},
		{`{"oidc":{"claim_name":"roles","claim_value":"admin"}}`, false}, // claim values are case-sensitive
		{`{"oidc":{"claim_name":"dept","claim_value":"R&D"}}`, true},
		{`{"oidc":{"claim_name":"level","claim_value":"7"}}`, true},
		{`{"oidc":{"claim_name":"mfa","claim_value":"true"}}`, true},
		{`{"oidc":{"claim_name":"mfa","claim_value":"false"}}`, false},
		{`{"oidc":{"claim_name":"missing","claim_value":""}}`, false},
		{`{"oidc":{"claim_name":"roles","claim_value":"Admin","identity_provider_id":"okta"}}`, false},
		{`{"login_method":{"id":"entra"}}`, true},
		{`{"login_method":{"id":"okta"}}`, false},
		{`{"ip":{"ip":"10.0.0.0/8"}}`, true},
		{`{"ip":{"ip":"10.1.2.3"}}`, true},
		{`{"ip":{"ip":"192.168.0.0/16"}}`, false},
	} {
		c := mustApp(t, `{"name":"x","domain":"x.example","policies":[{"name":"p","decision":"allow","precedence":1,"include":[`+tc.sel+`]}]}`)
		got := c.Decide("/", ip, id).Decision == Allow
		if got != tc.want {
			t.Errorf("selector %s matched = %v, want %v", tc.sel, got, tc.want)
		}
	}
	// Without a known client address, ip selectors never match.
	c := mustApp(t, `{"name":"x","domain":"x.example","policies":[{"name":"p","decision":"allow","precedence":1,"include":[{"ip":{"ip":"0.0.0.0/0"}}]}]}`)
	if r := c.Decide("/", netip.Addr{}, id); r.Decision != Deny {
		t.Errorf("ip selector with unknown address: %v, want deny", r)
	}
	// An IPv4-mapped IPv6 client address matches an IPv4 CIDR.
	if r := c.Decide("/", netip.MustParseAddr("::ffff:10.1.2.3"), id); r.Decision != Allow {
		t.Errorf("ip selector with ::ffff:10.1.2.3: %v, want allow", r)
	}
}

func TestPrecedenceRequireExcludePaths(t *testing.T) {
	t.Parallel()
	c := mustApp(t, `{"name":"x","domain":"x.example","policies":[
	  {"name":"allow-eng","decision":"allow","precedence":20,"include":[{"group":{"name":"eng"}}]},
	  {"name":"deny-admin-path","decision":"deny","precedence":10,"include":[{"everyone":{}}],"exclude":[{"group":{"name":"admins"}}],"paths":["/admin"]},
	  {"name":"allow-both","decision":"allow","precedence":5,"include":[{"group":{"name":"eng"}}],"require":[{"group":{"name":"sre"}},{"email_domain":{"domain":"corp.example"}}]},
	  {"name":"public","decision":"bypass","include":[{"ip":{"ip":"192.0.2.0/24"}}],"paths":["/public"]}
	]}`)
	eng := NewIdentity("e@corp.example", "okta", []string{"eng"}, nil)
	sre := NewIdentity("s@corp.example", "okta", []string{"eng", "sre"}, nil)
	sreOut := NewIdentity("s@other.example", "okta", []string{"eng", "sre"}, nil)
	admin := NewIdentity("a@corp.example", "okta", []string{"eng", "admins"}, nil)
	for _, tc := range []struct {
		name, path string
		id         *Identity
		want       string
	}{
		{"eng anywhere", "/x", eng, "allow-eng"},
		{"eng under /admin is denied first", "/admin/users", eng, "deny-admin-path"},
		{"admins excluded from the deny", "/admin/users", admin, "allow-eng"},
		{"eng not under /adminx", "/adminx", eng, "allow-eng"},
		{"require all met wins by precedence", "/admin", sre, "allow-both"},
		{"require one missing", "/x", sreOut, "allow-eng"},
		{"require one missing under admin", "/admin", sreOut, "deny-admin-path"},
	} {
		if r := c.Decide(tc.path, netip.Addr{}, tc.id); r.Reason != tc.want {
			t.Errorf("%s: Decide(%s) = %s, want %s", tc.name, tc.path, r.Reason, tc.want)
		}
	}
	in := netip.MustParseAddr("192.0.2.7")
	if c.BypassFor("/public/x", in) == nil || c.BypassFor("/public/x", netip.MustParseAddr("198.51.100.1")) != nil || c.BypassFor("/x", in) != nil {
		t.Error("BypassFor: want a bypass only for /public from 192.0.2.0/24")
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	a, err := ParseApp([]byte(`{
	  "name": "",
	  "domain": "https://x.example",
	  "session_duration": "forever",
	  "allowed_idps": [""],
	  "policies": [
	    {"name": "a", "decision": "allow", "precedence": 1, "include": [{"groups": {"name": "x"}}]},
	    {"name": "b", "decision": "deny", "precedence": 1, "include": [{"ip": {"ip": "10.0.0.0/33"}}]},
	    {"name": "a", "decision": "maybe", "include": []},
	    {"name": "c", "decision": "bypass", "include": [{"group": {"name": "eng"}}], "paths": ["nope"]},
	    {"name": "d", "decision": "allow", "include": [{"email": {"email": "x"}, "ip": {"ip": "1.2.3.4"}}], "require": [{"oidc": {"claim": "x"}}]}
	  ]}`))
	if err != nil {
		t.Fatal(err)
	}
	got := a.Validate()
	want := []string{
		"name: required",
		`domain: "https://x.example": no scheme, just the host and an optional path`,
		`session_duration: "forever" is not a duration (e.g. "8h", "30m")`,
		"allowed_idps[0]: empty IdP id",
		`policies[0].include[0]: unknown selector "groups" (want one of everyone, email, email_domain, group, oidc, login_method, ip)`,
		"policies[1].precedence: 1 is also the precedence of policies[0]",
		`policies[1].include[0]: ip.ip: "10.0.0.0/33" is not a CIDR (e.g. 10.0.0.0/8)`,
		`policies[2].name: "a" is also the name of policies[0]; deny reasons and metrics name policies, so names are unique`,
		`policies[2].decision: "maybe" is not one of allow, deny, bypass`,
		`policies[2].include: at least one selector (use {"everyone": {}} to match everyone)`,
		"policies[3].include[0]: a bypass policy is evaluated without an identity; only everyone and ip selectors are allowed, not group",
		`policies[3].paths[0]: "nope" must start with /`,
		"policies[4].precedence: required for allow policies, an integer >= 1 (lower is evaluated first)",
		"policies[4].include[0]: want exactly one selector, got 2",
		`policies[4].require[0]: oidc: json: unknown field "claim"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Validate() (-want +got):\n%s", diff)
	}
	if _, err := CompileApp(a); err == nil {
		t.Error("CompileApp(invalid) = nil error")
	}
}

func TestValidateSetDuplicateDomain(t *testing.T) {
	t.Parallel()
	got := ValidateSet([]App{appOn("a", "X.example/api/"), appOn("b", "x.example/api"), appOn("c", "x.example")})
	if len(got) != 1 || !strings.Contains(got[0], `"x.example/api" is already the domain of application a`) {
		t.Errorf("ValidateSet = %q, want one duplicate-domain problem naming a", got)
	}
	if _, err := Compile([]App{appOn("a", "x.example"), appOn("b", "X.EXAMPLE")}); err == nil {
		t.Error("Compile(two apps on one domain) = nil error")
	}
}

func TestParseAppRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{`{"name":"x","domian":"x"}`, `{"name":"x"} {}`, `[`} {
		if _, err := ParseApp([]byte(raw)); err == nil {
			t.Errorf("ParseApp(%s) = nil error", raw)
		}
	}
}

func FuzzDecide(f *testing.F) {
	f.Add(issueApp, "/api/health", "ann@corp.example", "okta", "Engineering")
	f.Fuzz(func(t *testing.T, raw, path, email, idp, group string) {
		a, err := ParseApp([]byte(raw))
		if err != nil {
			return
		}
		c, err := CompileApp(a)
		if err != nil {
			return
		}
		p := NormalizePath(path)
		r := c.Decide(p, netip.Addr{}, NewIdentity(email, idp, []string{group}, nil))
		if r.Decision != Allow && r.Decision != Deny {
			t.Fatalf("Decide = %q, want allow or deny", r.Decision)
		}
		if (r.Policy == nil) != (r.Reason == ReasonNoPolicy) {
			t.Fatalf("Decide = %+v: a reason names the deciding policy, or no_policy when none", r)
		}
		if b := c.BypassFor(p, netip.Addr{}); b != nil && b.Policy.Decision != Bypass {
			t.Fatalf("BypassFor = %+v, not a bypass policy", b)
		}
	})
}

// TestPreparedIdentityAgrees: an identity prepared for a registry (group selectors as bits) decides
// exactly as one evaluated by name, including for groups no selector names and for another
// registry's preparation.
func TestPreparedIdentityAgrees(t *testing.T) {
	t.Parallel()
	a1, _ := ParseApp([]byte(issueApp))
	a1.ID = "a1"
	a2 := appOn("a2", "other.example")
	a2.Policies = []Policy{
		{Name: "ops", Decision: Allow, Precedence: 2, Include: []Selector{{Group: &GroupSel{Name: "OPS"}}, {Group: &GroupSel{Name: "sre", IdentityProviderID: "okta"}}}},
		{Name: "no interns", Decision: Deny, Precedence: 1, Include: []Selector{{Everyone: &Everyone{}}}, Exclude: []Selector{{Group: &GroupSel{Name: "staff"}}}},
	}
	reg, err := Compile([]App{a1, a2})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Compile([]App{appOn("x", "x.example")})
	for _, groups := range [][]string{nil, {"engineering"}, {"Ops", "staff"}, {"SRE", "Staff"}, {"unknown", "staff", "Engineering"}} {
		for _, idp := range []string{"okta", "entra"} {
			for _, c := range reg.Apps() {
				plain := NewIdentity("ann@corp.example", idp, groups, nil)
				prepared := NewIdentity("ann@corp.example", idp, groups, nil)
				reg.Prepare(prepared)
				foreign := NewIdentity("ann@corp.example", idp, groups, nil)
				other.Prepare(foreign)
				want := c.Decide("/", netip.Addr{}, plain)
				for name, id := range map[string]*Identity{"prepared": prepared, "foreign": foreign} {
					if got := c.Decide("/", netip.Addr{}, id); got.Reason != want.Reason {
						t.Errorf("%s %v %s at %s: %s decides %s, by name %s", c.App.ID, groups, idp, c.App.ID, name, got.Reason, want.Reason)
					}
				}
			}
		}
	}
}
