package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/scimflow/scimflow/app"
	"github.com/scimflow/scimflow/internal/devidp"
	"github.com/scimflow/scimflow/internal/logging"
	"github.com/scimflow/scimflow/internal/scenario"
)

// embedded is the whole pipeline running in this process (what `serve` runs), plus the test
// OpenID provider, for demo and bench.
type embedded struct {
	ep     scenario.Endpoints
	op     *devidp.Provider
	secret string // the provider's client secret
	admin  *scenario.Admin
	cancel context.CancelFunc
	done   chan error
}

// listenAddr returns preferred if it is free on loopback, else a free loopback port.
func listenAddr(preferred string) (string, error) {
	if preferred != "" {
		if ln, err := net.Listen("tcp", preferred); err == nil {
			ln.Close()
			return preferred, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startEmbedded starts the provider and app.Run with all services on dataDir and loopback
// listeners (the default ports when free and defaultPorts is set). Settings go through the same
// SCIMFLOW_* overrides serve reads, so the wiring is exactly serve's. tune may adjust the config.
func startEmbedded(ctx context.Context, dataDir string, defaultPorts bool, logW io.Writer, logLevel string, tune func(*app.File)) (*embedded, error) {
	pref := []string{"", "", "", "", "", ""}
	if defaultPorts {
		pref = []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:9080", "127.0.0.1:9081", "127.0.0.1:9082"}
	}
	var addrs [6]string
	for i := range addrs {
		a, err := listenAddr(pref[i])
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	ep := scenario.Endpoints{SCIM: "http://" + addrs[0], Admin: "http://" + addrs[1], Auth: "http://" + addrs[2],
		AdminToken: scenario.RandomString(32), Metrics: []string{"http://" + addrs[3], "http://" + addrs[4], "http://" + addrs[5]}}
	env := map[string]string{
		"SCIMFLOW_DATA_DIR":                      dataDir,
		"SCIMFLOW_ADMIN_TOKEN":                   ep.AdminToken,
		"SCIMFLOW_SCIM_INGEST_LISTEN":            addrs[0],
		"SCIMFLOW_SCIM_INGEST_BASE_URL":          ep.SCIM,
		"SCIMFLOW_IDENTITY_STORE_LISTEN":         addrs[1],
		"SCIMFLOW_AUTH_LISTEN":                   addrs[2],
		"SCIMFLOW_AUTH_EXTERNAL_URL":             ep.Auth,
		"SCIMFLOW_SCIM_INGEST_METRICS_LISTEN":    addrs[3],
		"SCIMFLOW_IDENTITY_STORE_METRICS_LISTEN": addrs[4],
		"SCIMFLOW_AUTH_METRICS_LISTEN":           addrs[5],
	}
	// The demo's own settings win; any other SCIMFLOW_* in the environment still applies.
	f, err := app.Load("", func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	})
	if err != nil {
		return nil, err
	}
	if tune != nil {
		tune(&f)
	}
	log, err := logging.New(logW, "text", logLevel)
	if err != nil {
		return nil, err
	}
	op, secret, err := scenario.StartProvider()
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	e := &embedded{ep: ep, op: op, secret: secret, admin: ep.AdminClient(), cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- app.Run(rctx, f, app.AllServices, log) }()
	ready := make(chan error, 1)
	go func() { ready <- ep.WaitReady(rctx, 60*time.Second) }()
	select {
	case err = <-ready:
	case err = <-e.done:
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		e.done <- err
	}
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("start scimflow: %w", err)
	}
	return e, nil
}

// stop ends the pipeline and the provider and waits (bounded) for a clean shutdown.
func (e *embedded) stop() error {
	e.cancel()
	e.op.Close()
	select {
	case err := <-e.done:
		return err
	case <-time.After(15 * time.Second):
		return errors.New("shutdown took longer than 15s")
	}
}

// newIdP creates an IdP at the embedded provider and waits until scim-ingest and auth know it.
func (e *embedded) newIdP(ctx context.Context, name, behavior string, userDep, seatDep bool, d scenario.Dialect) (scenario.IdP, *scenario.SCIM, error) {
	idp, err := e.admin.CreateIdP(ctx, scenario.NewIdPSpec(name, e.op, e.secret, behavior, userDep, seatDep))
	if err != nil {
		return idp, nil, err
	}
	s := &scenario.SCIM{BaseURL: idp.SCIMConfig.SCIMBaseURL, Secret: idp.SCIMConfig.Secret, Dialect: d}
	if s.BaseURL == "" || !strings.HasPrefix(s.BaseURL, "http") {
		s.BaseURL = e.ep.SCIM + "/populations/" + idp.ID + "/scim/v2"
	}
	if err := s.Ready(ctx, 20*time.Second); err != nil {
		return idp, nil, err
	}
	if err := scenario.NewBrowser(e.ep.Auth, nil).WaitIdP(ctx, idp.ID, 20*time.Second); err != nil {
		return idp, nil, err
	}
	return idp, s, nil
}

// narrator prints the demo's story with the time each step took.
type narrator struct {
	w     io.Writer
	start time.Time
}

func (n *narrator) section(title string) {
	fmt.Fprintf(n.w, "\n== %s\n", title)
}

func (n *narrator) say(format string, args ...any) {
	fmt.Fprintf(n.w, "   "+format+"\n", args...)
}

// step prints what happened and how long it took.
func (n *narrator) step(d time.Duration, format string, args ...any) {
	fmt.Fprintf(n.w, "   %-86s %9s\n", fmt.Sprintf(format, args...), fmtDur(d))
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
	}
	return d.Round(time.Millisecond).String()
}

// runDemo starts the embedded pipeline and the test OpenID provider and narrates a lifecycle.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "data directory (default: a temporary one, removed at exit)")
	exit := fs.Bool("exit", false, "exit after the narration instead of running until Ctrl-C")
	logLevel := fs.String("log-level", "error", "log level of the services (their logs go to stderr)")
	randomPorts := fs.Bool("random-ports", false, "listen on free loopback ports instead of 127.0.0.1:8080-8082 (metrics 9080-9082)")
	if code, ok := parseFlags(fs, args, "Usage: scimflow demo [flags]\n"+
		"\nStarts scim-ingest, identity-store and auth in this process with an embedded JetStream, plus a\n"+
		"test OpenID provider on loopback; then provisions people over SCIM as Okta and Entra ID would,\n"+
		"logs them in, changes their groups under each identity_update_behavior, deprovisions them and\n"+
		"shows /verify going from 200 to 401, with the time each step took. It keeps running for you to\n"+
		"explore with the printed curl commands until Ctrl-C (or -exit).\n", stderr); !ok {
		return code
	}
	if !noArgs(fs, "demo", stderr) {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "scimflow-demo-")
		if err != nil {
			fmt.Fprintf(stderr, "scimflow demo: %v\n", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	n := &narrator{w: stdout, start: time.Now()}
	if err := demo(ctx, n, dir, !*randomPorts, *exit, stderr, *logLevel); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		fmt.Fprintf(stderr, "scimflow demo: %v\n", err)
		return 1
	}
	return 0
}

// demoMode is one IdP of the demo: an update behaviour and the person who lives through it.
type demoMode struct {
	behavior string
	dialect  scenario.Dialect
	idp      scenario.IdP
	scim     *scenario.SCIM
	person   *scenario.Person
	browser  *scenario.Browser
}

func demo(ctx context.Context, n *narrator, dir string, defaultPorts, exitAfter bool, stderr io.Writer, logLevel string) error {
	n.section("Starting scimflow (scim-ingest, identity-store, auth, embedded JetStream) and a test OpenID provider")
	t0 := time.Now()
	e, err := startEmbedded(ctx, dir, defaultPorts, stderr, logLevel, nil)
	if err != nil {
		return err
	}
	defer e.stop()
	n.step(time.Since(t0), "pipeline ready; data in %s", dir)
	n.say("SCIM        %s/populations/{idp_id}/scim/v2", e.ep.SCIM)
	n.say("admin API   %s/api/v1   (Authorization: Bearer %s)", e.ep.Admin, e.ep.AdminToken)
	n.say("console     %s/ui/   (sign in by pasting the admin token %s)", e.ep.Admin, e.ep.AdminToken)
	n.say("auth        %s   (/login, /callback, /verify, /get-identity, /certs)", e.ep.Auth)
	n.say("OpenID provider %s (no UI: it signs in whoever the login asks for)", e.op.Issuer())

	modes := []*demoMode{
		{behavior: "automatic", dialect: scenario.Okta},
		{behavior: "reauth", dialect: scenario.Entra},
		{behavior: "no_action", dialect: scenario.Okta},
	}
	names := map[string][2]string{"automatic": {"Alice", "Automatic"}, "reauth": {"Raj", "Reauth"}, "no_action": {"Nora", "Noaction"}}

	n.section("Creating three IdPs through the admin API, one per identity_update_behavior (user_deprovision and seat_deprovision on)")
	for _, m := range modes {
		t := time.Now()
		label := fmt.Sprintf("demo %s (%s)", m.dialect, m.behavior)
		if m.idp, m.scim, err = e.newIdP(ctx, label, m.behavior, true, true, m.dialect); err != nil {
			return err
		}
		n.step(time.Since(t), "%-26s id %s", label, m.idp.ID)
	}

	n.section("Provisioning over SCIM before anyone logs in (Okta and Entra request shapes)")
	for _, m := range modes {
		nm := names[m.behavior]
		email := strings.ToLower(nm[0]) + "@" + m.behavior + ".demo.example.com"
		if m.person, err = scenario.NewPerson(e.op, email, nm[0], nm[1]); err != nil {
			return err
		}
		eng := &scenario.SCIMGroup{DisplayName: "Engineering"}
		t := time.Now()
		if _, err := m.scim.CreateUser(ctx, m.person.User); err != nil {
			return err
		}
		if _, err := m.scim.CreateGroup(ctx, eng); err != nil {
			return err
		}
		added, err := m.scim.AddMembers(ctx, eng, m.person.User)
		if err != nil {
			return err
		}
		took := time.Since(t)
		// Log in only once identity-store has applied the membership.
		if err := waitLog(ctx, e.admin, m.idp.ID, added.RequestID); err != nil {
			return err
		}
		var u scenario.User
		t = time.Now()
		err = scenario.Eventually(ctx, 20*time.Second, func() error {
			var found bool
			var err error
			if u, found, err = e.admin.UserByEmail(ctx, m.idp.ID, email); err != nil || !found {
				return fmt.Errorf("not in the registry yet: %v", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		n.step(took, "%s: POST /Users, POST /Groups, PATCH members (%s)", email, m.dialect)
		n.step(time.Since(t), "  registry: status %s, seat %v, user id %s", u.Status, u.SeatHeld, u.ID)
	}

	n.section("First login: /login → OpenID provider → /callback (the session takes a seat and carries the SCIM groups)")
	for _, m := range modes {
		m.browser = scenario.NewBrowser(e.ep.Auth, nil)
		t := time.Now()
		r, err := m.browser.Login(ctx, m.idp.ID, m.person.Sub)
		if err != nil {
			return err
		}
		if !r.OK() {
			return fmt.Errorf("login of %s: %d %s", m.person.User.UserName, r.Status, r.Body)
		}
		n.step(time.Since(t), "%s logged in", m.person.User.UserName)
		t = time.Now()
		v, err := waitVerify(ctx, m.browser, func(v scenario.VerifyResult) bool {
			return v.Status == http.StatusOK && v.Header.Get("X-Scimflow-Groups") == "Engineering"
		})
		if err != nil {
			return err
		}
		n.step(time.Since(t), "  /verify %d  X-Scimflow-Email: %s  X-Scimflow-Groups: %s", v.Status, v.Header.Get("X-Scimflow-Email"), v.Header.Get("X-Scimflow-Groups"))
	}

	n.section("The IdP adds each person to \"Admins\": what each identity_update_behavior does")
	for _, m := range modes {
		admins := &scenario.SCIMGroup{DisplayName: "Admins"}
		if _, err := m.scim.CreateGroup(ctx, admins); err != nil {
			return err
		}
		res, err := m.scim.AddMembers(ctx, admins, m.person.User)
		if err != nil {
			return err
		}
		n.say("%s (%s): PATCH /Groups/%s add member, request %s", m.behavior, m.person.User.UserName, admins.ID, res.RequestID)
		switch m.behavior {
		case "automatic":
			v, err := waitVerify(ctx, m.browser, func(v scenario.VerifyResult) bool {
				return v.Status == http.StatusOK && strings.Contains(v.Header.Get("X-Scimflow-Groups"), "Admins")
			})
			if err != nil {
				return err
			}
			n.step(time.Since(res.Done), "  automatic: same session, /verify %d, groups now %s", v.Status, v.Header.Get("X-Scimflow-Groups"))
		case "reauth":
			v, err := waitVerify(ctx, m.browser, func(v scenario.VerifyResult) bool { return v.Status == http.StatusUnauthorized })
			if err != nil {
				return err
			}
			n.step(time.Since(res.Done), "  reauth: session revoked, /verify %d; the person must log in again", v.Status)
			t := time.Now()
			if r, err := m.browser.Login(ctx, m.idp.ID, m.person.Sub); err != nil || !r.OK() {
				return fmt.Errorf("re-login: %v %d", err, r.Status)
			}
			v, err = waitVerify(ctx, m.browser, func(v scenario.VerifyResult) bool {
				return v.Status == http.StatusOK && strings.Contains(v.Header.Get("X-Scimflow-Groups"), "Admins")
			})
			if err != nil {
				return err
			}
			n.step(time.Since(t), "  reauth: after a new login, /verify %d, groups %s", v.Status, v.Header.Get("X-Scimflow-Groups"))
		case "no_action":
			if err := waitLog(ctx, e.admin, m.idp.ID, res.RequestID); err != nil {
				return err
			}
			v, err := m.browser.Verify(ctx, scenario.Nginx, "https://app.example.com/")
			if err != nil {
				return err
			}
			n.step(time.Since(res.Done), "  no_action: logged, session unchanged, /verify %d, groups %s", v.Status, v.Header.Get("X-Scimflow-Groups"))
			b2 := scenario.NewBrowser(e.ep.Auth, nil)
			t := time.Now()
			if r, err := b2.Login(ctx, m.idp.ID, m.person.Sub); err != nil || !r.OK() {
				return fmt.Errorf("login: %v %d", err, r.Status)
			}
			v, err = waitVerify(ctx, b2, func(v scenario.VerifyResult) bool {
				return v.Status == http.StatusOK && strings.Contains(v.Header.Get("X-Scimflow-Groups"), "Admins")
			})
			if err != nil {
				return err
			}
			n.step(time.Since(t), "  no_action: the next login reads the new groups: %s", v.Header.Get("X-Scimflow-Groups"))
		}
	}

	n.section("Deprovisioning: the IdP sets active=false; watch /verify go from 200 to 401")
	keep := modes[2] // left logged in for you to explore
	for _, m := range modes[:2] {
		before, err := m.browser.Verify(ctx, scenario.Nginx, "https://app.example.com/")
		if err != nil {
			return err
		}
		res, err := m.scim.SetActive(ctx, m.person.User, false)
		if err != nil {
			return err
		}
		v, err := waitVerify(ctx, m.browser, func(v scenario.VerifyResult) bool { return v.Status == http.StatusUnauthorized })
		if err != nil {
			return err
		}
		n.step(time.Since(res.Done), "%s: /verify %d → %d after the SCIM response (request %s)", m.person.User.UserName, before.Status, v.Status, res.RequestID)
		r, err := scenario.NewBrowser(e.ep.Auth, nil).Login(ctx, m.idp.ID, m.person.Sub)
		if err != nil {
			return err
		}
		n.say("  a new login is refused: /callback %d %s", r.Status, strings.TrimSpace(r.Body))
		u, _, err := e.admin.UserByEmail(ctx, m.idp.ID, m.person.User.UserName)
		if err != nil {
			return err
		}
		for _, h := range u.History {
			if h.Cause == res.RequestID {
				n.say("  history: %s caused by SCIM request %s: %s", h.EventType, h.Cause, strings.Join(h.Notes, "; "))
			}
		}
		n.say("  registry: status %s, locked %v, seat %v", u.Status, u.Locked, u.SeatHeld)
	}

	if err := demoAccess(ctx, n, e, keep); err != nil {
		return err
	}
	if err := e.op.SetDefaultUser(keep.person.Sub); err != nil {
		return err
	}
	printExplore(n, e, keep)
	if exitAfter {
		return nil
	}
	n.section("Running until Ctrl-C")
	<-ctx.Done()
	return nil
}

// demoAccess creates two access applications and shows an allowed and a denied request of the same
// session (docs/access-policies.md).
func demoAccess(ctx context.Context, n *narrator, e *embedded, m *demoMode) error {
	n.section("Access applications: who may reach which host (policies on SCIM groups, evaluated at /verify)")
	pol := func(name, group string) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"name": name, "decision": "allow", "precedence": 1,
			"include": []any{map[string]any{"group": map[string]string{"name": group}}}})
		return b
	}
	t := time.Now()
	app, err := e.admin.CreateAccessApp(ctx, scenario.AccessApp{Name: "Demo app", Domain: "app.example.com", Policies: []json.RawMessage{pol("engineering", "Engineering")}})
	if err != nil {
		return err
	}
	fin, err := e.admin.CreateAccessApp(ctx, scenario.AccessApp{Name: "Finance", Domain: "finance.example.com", Policies: []json.RawMessage{pol("finance", "Finance")}})
	if err != nil {
		return err
	}
	n.step(time.Since(t), "POST /api/v1/access/apps: %s (Engineering) id %s, %s (Finance) id %s", app.Domain, app.ID, fin.Domain, fin.ID)
	user := m.person.User.UserName
	t = time.Now()
	ok, err := waitAccess(ctx, m.browser, "https://app.example.com/dashboards", http.StatusOK, "")
	if err != nil {
		return err
	}
	n.step(time.Since(t), "%s → app.example.com:     /verify %d  X-Scimflow-App: %s", user, ok.Status, ok.Header.Get("X-Scimflow-App"))
	denied, err := waitAccess(ctx, m.browser, "https://finance.example.com/", http.StatusForbidden, "no_policy")
	if err != nil {
		return err
	}
	n.step(0, "%s → finance.example.com: /verify %d  X-Scimflow-Deny-Reason: %s", user, denied.Status, denied.Header.Get("X-Scimflow-Deny-Reason"))
	other, err := waitAccess(ctx, m.browser, "https://wiki.example.com/", http.StatusForbidden, "no_application")
	if err != nil {
		return err
	}
	n.step(0, "%s → wiki.example.com:    /verify %d  X-Scimflow-Deny-Reason: %s (no application covers it)", user, other.Status, other.Header.Get("X-Scimflow-Deny-Reason"))
	t = time.Now()
	rep, err := e.admin.TestAccessApp(ctx, fin.ID)
	if err != nil {
		return err
	}
	n.step(time.Since(t), "policy tester for Finance over the registry: %d users, %d allowed, %d denied", rep.Summary.Users, rep.Summary.Allowed, rep.Summary.Denied)
	return nil
}

// waitAccess polls /verify (as an API caller behind a proxy asks it) for appURL until it answers want
// with the deny reason reason: auth replicas learn new apps asynchronously.
func waitAccess(ctx context.Context, b *scenario.Browser, appURL string, want int, reason string) (scenario.VerifyResult, error) {
	var v scenario.VerifyResult
	err := scenario.Eventually(ctx, 20*time.Second, func() error {
		var err error
		if v, err = b.Verify(ctx, scenario.API, appURL); err != nil {
			return err
		}
		if v.Status != want || v.Header.Get("X-Scimflow-Deny-Reason") != reason {
			return fmt.Errorf("/verify for %s = %d %q, want %d %q", appURL, v.Status, v.Header.Get("X-Scimflow-Deny-Reason"), want, reason)
		}
		return nil
	})
	return v, err
}

func waitVerify(ctx context.Context, b *scenario.Browser, ok func(scenario.VerifyResult) bool) (scenario.VerifyResult, error) {
	var v scenario.VerifyResult
	err := scenario.Eventually(ctx, 20*time.Second, func() error {
		var err error
		if v, err = b.Verify(ctx, scenario.Nginx, "https://app.example.com/"); err != nil {
			return err
		}
		if !ok(v) {
			return fmt.Errorf("/verify = %d groups %q", v.Status, v.Header.Get("X-Scimflow-Groups"))
		}
		return nil
	})
	return v, err
}

func waitLog(ctx context.Context, a *scenario.Admin, idp, reqID string) error {
	return scenario.Eventually(ctx, 20*time.Second, func() error {
		rows, err := a.SCIMLogs(ctx, map[string][]string{"idp_id": {idp}, "limit": {"50"}})
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.RequestID == reqID {
				return nil
			}
		}
		return errors.New("not logged yet")
	})
}

func printExplore(n *narrator, e *embedded, m *demoMode) {
	n.section("Explore (copy and paste)")
	tok, sess := e.ep.AdminToken, m.browser.Session()
	n.say("# the admin console in a browser: paste the admin token %s", tok)
	n.say("open '%s/ui/'", e.ep.Admin)
	n.say("# users and their status, seat, lock; one user's history")
	n.say("curl -s -H 'Authorization: Bearer %s' %s/api/v1/users", tok, e.ep.Admin)
	n.say("# the SCIM provisioning log")
	n.say("curl -s -H 'Authorization: Bearer %s' '%s/api/v1/logs/scim?limit=10'", tok, e.ep.Admin)
	n.say("# %s is still logged in: /verify as nginx's auth_request calls it", m.person.User.UserName)
	n.say("curl -si -H 'Cookie: scimflow_session=%s' -H 'X-Forwarded-Host: app.example.com' '%s/verify?redirect=false'", sess, e.ep.Auth)
	n.say("curl -s -H 'Cookie: scimflow_session=%s' %s/get-identity", sess, e.ep.Auth)
	n.say("# deprovision %s as Okta does, then repeat the /verify call", m.person.User.UserName)
	n.say("curl -s -X PATCH -H 'Authorization: Bearer %s' -H 'Content-Type: application/scim+json' \\", m.scim.Secret)
	n.say("  -d '{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{\"op\":\"replace\",\"value\":{\"active\":false}}]}' \\")
	n.say("  %s/Users/%s", m.scim.BaseURL, m.person.User.ID)
	n.say("# access applications, the policy tester and the access log")
	n.say("curl -s -H 'Authorization: Bearer %s' %s/api/v1/access/apps", tok, e.ep.Admin)
	n.say("curl -s -H 'Authorization: Bearer %s' '%s/api/v1/logs/access?limit=10'", tok, e.ep.Admin)
	n.say("curl -si -H 'Cookie: scimflow_session=%s' -H 'X-Forwarded-Host: finance.example.com' -H 'Accept: application/json' %s/verify", sess, e.ep.Auth)
	n.say("# log in with a browser (the test provider signs in %s without asking)", m.person.User.UserName)
	n.say("open '%s/login?idp_id=%s'", e.ep.Auth, m.idp.ID)
}
