package auth

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// benchApps builds n apps of 10 policies with 10 group selectors each on host{i}.bench.example; on
// every app only the last selector of the last policy matches a member of Group 49, so a request
// evaluates all 100 selectors before it is allowed (the worst case short of a deny).
func benchApps(n int) []access.App {
	var apps []access.App
	for a := range n {
		app := access.App{ID: fmt.Sprintf("app-%03d", a), Name: fmt.Sprintf("App %d", a), Domain: fmt.Sprintf("host%d.bench.example", a)}
		for p := range 10 {
			pol := access.Policy{Name: fmt.Sprintf("p%d", p), Decision: access.Allow, Precedence: p + 1}
			if p%2 == 1 {
				pol.Decision = access.Deny
			}
			for s := range 10 {
				pol.Include = append(pol.Include, access.Selector{Group: &access.GroupSel{Name: fmt.Sprintf("Other %d", p*10+s)}})
			}
			app.Policies = append(app.Policies, pol)
		}
		app.Policies[9].Decision = access.Allow
		app.Policies[9].Include[9] = access.Selector{Group: &access.GroupSel{Name: "group 49"}}
		apps = append(apps, app)
	}
	return apps
}

// BenchmarkVerifyPolicies measures /verify with 100 access applications of 10 policies × 10
// selectors, a session with 50 groups, requests spread over the apps' hosts, against a hello-world
// handler in the same run (64 concurrent keep-alive clients on loopback, as BenchmarkVerify).
// Reports both rates and the ratio (target ≥ 0.55). Run with -bench VerifyPolicies -benchtime 200000x.
func BenchmarkVerifyPolicies(b *testing.B) {
	h := newHarness(b, harnessOpts{})
	var groups []string
	for g := range 50 {
		groups = append(groups, fmt.Sprintf("Group %d", g))
	}
	if err := h.op.AddUser(oidctest.User{Sub: "many", Email: "many@example.com", Name: "Many Groups", Groups: groups}); err != nil {
		b.Fatal(err)
	}
	tok := h.loginAs(h.op, "many")
	for _, a := range benchApps(100) {
		h.n.putApp(b, a)
	}
	waitFor(b, "100 apps compiled", 20*time.Second, func() error {
		if h.r.srv.apps.cur.Load().reg.Len() != 100 {
			return errNotYet
		}
		return nil
	})
	hello := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("hello, world\n"))
	}))
	defer hello.Close()
	n := max(b.N, 1000)
	cookie := &http.Cookie{Name: h.r.srv.sessionName, Value: tok}
	// One host per load round keeps the request fixed per client; rounds rotate over the apps.
	fwd := func(i int) map[string]string {
		return map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": fmt.Sprintf("host%d.bench.example", (i*37)%100), "X-Forwarded-Uri": "/d/x?y=1"}
	}
	load(b, hello.URL, nil, nil, 2000, http.StatusOK)
	load(b, h.r.url+"/verify", cookie, fwd(0), 2000, http.StatusOK)
	const rounds = 10
	per := max(n/rounds, 100)
	var helloT, verifyT time.Duration
	b.ResetTimer()
	for i := range rounds {
		helloT += load(b, hello.URL, nil, nil, per, http.StatusOK)
		verifyT += load(b, h.r.url+"/verify", cookie, fwd(i), per, http.StatusOK)
	}
	b.StopTimer()
	helloRate := float64(per*rounds) / helloT.Seconds()
	verifyRate := float64(per*rounds) / verifyT.Seconds()
	b.ReportMetric(verifyRate, "verify_req/s")
	b.ReportMetric(helloRate, "hello_req/s")
	b.ReportMetric(verifyRate/helloRate, "ratio")
}

// BenchmarkDecide is the evaluation alone: match among 100 apps and 100 selectors for a 50-group
// identity, no HTTP.
func BenchmarkDecide(b *testing.B) {
	reg, err := access.Compile(benchApps(100))
	if err != nil {
		b.Fatal(err)
	}
	var groups []string
	for g := range 50 {
		groups = append(groups, fmt.Sprintf("Group %d", g))
	}
	id := access.NewIdentity("many@example.com", "idp-a", groups, nil)
	reg.Prepare(id)
	hosts := make([]string, 100)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host%d.bench.example", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		path := access.NormalizePath("/d/x?y=1")
		c := reg.Match(hosts[i%100], path)
		if c == nil || c.Decide(path, netip.Addr{}, id).Decision != access.Allow {
			b.Fatal("not allowed")
		}
	}
}
