//go:build browser

// Package browser is the console's browser suite (docs/console.md): Debian's Chromium, driven by
// chromedp, against `scimflow serve` (built once, run as a subprocess with free loopback ports) and
// the test OpenID provider. It is outside `go test -race ./...` (build tag browser); run it with
// `make browser-test`. Each page's screenshot is written under $TMPDIR/scimflow-console (or
// $CONSOLE_SCREENSHOTS) for a human to look at; nothing compares pixels.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scimflow/scimflow/internal/devidp"
	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/proctest"
)

// stack is the running system the suite drives.
type stack struct {
	ep       scenario.Endpoints
	op       *devidp.Provider
	secret   string // the provider's client secret
	proxy    string // the reverse proxy in front of the console (forward auth with /verify)
	corpSCIM *scenario.SCIM
	shots    string
}

// The seeded IdP whose group may open the console through the proxy.
const (
	corpID         = "corp"
	consoleGroup   = "console-admins"
	corpSCIMSecret = "corp-scim-secret-for-the-browser-suite-0123456789"
)

var st *stack

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "browser suite:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func run(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "scimflow-browser")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "scimflow")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/scimflow/scimflow/cmd/scimflow").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build: %v\n%s", err, out)
	}
	op, secret, err := scenario.StartProvider()
	if err != nil {
		return 0, err
	}
	defer op.Close()
	scimA, adminA, authA, proxyA := freeAddr(), freeAddr(), freeAddr(), freeAddr()
	s := &stack{op: op, secret: secret, proxy: "http://" + proxyA,
		ep: scenario.Endpoints{SCIM: "http://" + scimA, Admin: "http://" + adminA, Auth: "http://" + authA, AdminToken: "browser-admin-" + scenario.RandomString(24)}}
	s.shots = os.Getenv("CONSOLE_SCREENSHOTS")
	if s.shots == "" {
		s.shots = filepath.Join(os.TempDir(), "scimflow-console")
	}
	if err := os.MkdirAll(s.shots, 0o755); err != nil {
		return 0, err
	}
	// The config file seeds the corp IdP (its id must be known before start for the console's
	// OIDC sign-in setting); JSON is YAML.
	corp := scenario.NewIdPSpec("Corp", op, secret, "automatic", true, false)
	cfg := map[string]any{
		"data_dir": filepath.Join(tmp, "data"), "admin_token": s.ep.AdminToken, "log": map[string]any{"level": "warn"},
		// Metrics on free ports, not the defaults 127.0.0.1:9080-9082 another serve may hold.
		"scim_ingest":    map[string]any{"listen": scimA, "base_url": s.ep.SCIM, "secret_grace": "1h", "metrics_listen": freeAddr()},
		"identity_store": map[string]any{"listen": adminA, "console_admin_idp": corpID, "console_admin_group": consoleGroup, "metrics_listen": freeAddr()},
		"auth":           map[string]any{"listen": authA, "external_url": s.ep.Auth, "allowed_redirect_origins": []string{s.proxy}, "metrics_listen": freeAddr()},
		"identity_providers": []any{map[string]any{"id": corpID, "name": corp.Name, "type": "oidc", "config": corp.Config,
			"scim_config": map[string]any{"enabled": true, "user_deprovision": true, "identity_update_behavior": "automatic", "secret": corpSCIMSecret}}},
	}
	raw, _ := json.MarshalIndent(cfg, "", "  ")
	cfgPath := filepath.Join(tmp, "scimflow.yaml")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		return 0, err
	}
	out := &proctest.SyncBuffer{}
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	}()
	ctx := context.Background()
	if err := s.ep.WaitReady(ctx, 60*time.Second); err != nil {
		return 0, fmt.Errorf("scimflow serve not ready: %w\n%s", err, out)
	}
	s.corpSCIM = &scenario.SCIM{BaseURL: s.ep.SCIM + "/populations/" + corpID + "/scim/v2", Secret: corpSCIMSecret, Dialect: scenario.Okta}
	if err := s.corpSCIM.Ready(ctx, 20*time.Second); err != nil {
		return 0, err
	}
	if err := scenario.NewBrowser(s.ep.Auth, nil).WaitIdP(ctx, corpID, 20*time.Second); err != nil {
		return 0, err
	}
	ln, err := net.Listen("tcp", proxyA)
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: forwardAuth(s.ep.Auth, s.ep.Admin)}
	go srv.Serve(ln)
	defer srv.Close()
	st = s
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "scimflow serve output:\n%s\n", out)
	}
	return code, nil
}

// forwardAuth is a reverse proxy in front of the console as docs/reverse-proxies.md configures
// Traefik/Caddy: every request is first sent to auth's /verify with the browser's headers; a 2xx
// forwards it to identity-store with X-Scimflow-Jwt-Assertion (overwriting any the client sent),
// anything else (the redirect to the login) goes back to the browser.
func forwardAuth(authURL, upstream string) http.Handler {
	up, _ := url.Parse(upstream)
	rp := httputil.NewSingleHostReverseProxy(up)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, authURL+"/verify", nil)
		for _, h := range []string{"Cookie", "Accept", "User-Agent"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		req.Header.Set("X-Forwarded-Method", r.Method)
		req.Header.Set("X-Forwarded-Proto", "http")
		req.Header.Set("X-Forwarded-Host", r.Host)
		req.Header.Set("X-Forwarded-Uri", r.URL.RequestURI())
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		if res.StatusCode/100 != 2 {
			for k, vs := range res.Header {
				w.Header()[k] = vs
			}
			w.WriteHeader(res.StatusCode)
			io.Copy(w, res.Body)
			return
		}
		r.Header.Del("X-Scimflow-Jwt-Assertion")
		if v := res.Header.Get("X-Scimflow-Jwt-Assertion"); v != "" {
			r.Header.Set("X-Scimflow-Jwt-Assertion", v)
		}
		rp.ServeHTTP(w, r)
	})
}

// newChrome starts a fresh headless Chromium (its own user-data-dir, so no cookie is shared with
// another test) and returns its context.
func newChrome(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.Headless, chromedp.NoSandbox, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	if p := os.Getenv("CHROMIUM"); p != "" {
		opts = append(opts, chromedp.ExecPath(p))
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first call starts the browser, which lives as long as ctx: no timeout on it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v (install it: apt-get install -y chromium)", err)
	}
	return ctx
}

// stepTimeout bounds one step of a test (a page load and its waits).
const stepTimeout = 60 * time.Second

// do runs steps and fails the test with what was being done.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 1500) : ""`))
		t.Fatalf("%s: %v (at %s)\npage:\n%s", what, err, loc, body)
	}
}

func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return get(t, ctx, "read "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	return get(t, ctx, "location", chromedp.Location())
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := get(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100)) // quality 100: PNG
	path := filepath.Join(st.shots, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
		return
	}
	t.Logf("screenshot %s", path)
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// waitURL waits until the page's address contains sub: a step that submits a form must not read
// the page it left.
func waitURL(sub string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for {
			if loc, err := chromedp.Location()(ctx, t); err == nil && strings.Contains(loc, sub) {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// chooseCorp picks the corp IdP when auth's login page asks which IdP to use (it does when more
// than one exists, as after the walkthrough created one).
func chooseCorp(t *testing.T, ctx context.Context) {
	t.Helper()
	get(t, ctx, "IdP chooser", chromedp.Evaluate[bool](`(() => {
		if (!location.pathname.endsWith("/login")) return false;
		const a = document.querySelector('a[href*="idp_id=corp"]');
		if (a) a.click();
		return !!a;
	})()`))
}

// signIn signs the browser in with the admin token.
func signIn(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, "sign in",
		chromedp.Navigate(st.ep.Admin+"/ui/signin"),
		chromedp.SendKeys(chromedp.CSS("#token"), st.ep.AdminToken),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS("#pipe-h")))
}

// TestConsoleWalkthrough is the admin's path through the console: refused without sign-in, signs in
// with the admin token, creates an IdP through the form (field messages first), provisions people
// over SCIM, finds one, revokes her sessions, deactivates another and follows the provisioning log
// to the revocation it caused; a forged CSRF token is refused; writes an access application, tests
// it against the registry, saves it and tests an edited policy.
func TestConsoleWalkthrough(t *testing.T) {
	ctx := newChrome(t)
	bg := context.Background()

	// Without a session: the page redirects to sign-in; a form post gets 401.
	do(t, ctx, "open people", chromedp.Navigate(st.ep.Admin+"/ui/people"), chromedp.WaitVisible(chromedp.CSS("#token")))
	if loc := location(t, ctx); !strings.HasPrefix(loc, st.ep.Admin+"/ui/signin?next=%2Fui%2Fpeople") {
		t.Fatalf("unauthenticated /ui/people ended at %s, want the sign-in page", loc)
	}
	screenshot(t, ctx, "signin")
	res, err := http.PostForm(st.ep.Admin+"/ui/idps", url.Values{"name": {"x"}})
	if err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /ui/idps without a session = %v %v, want 401", res.StatusCode, err)
	}
	res.Body.Close()

	// Wrong token, then the right one.
	do(t, ctx, "wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-it"), chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS(".alert")))
	mustContain(t, "wrong-token page", text(t, ctx, ".alert"), "not the admin token")
	signIn(t, ctx)
	if loc := location(t, ctx); loc != st.ep.Admin+"/ui/" && loc != st.ep.Admin+"/ui/people" {
		t.Logf("after sign-in at %s", loc)
	}

	// Create an IdP through the form: first without a client secret and with a bad URL.
	do(t, ctx, "new IdP form",
		chromedp.Navigate(st.ep.Admin+"/ui/idps/new"),
		chromedp.SendKeys(chromedp.CSS("#name"), "Okta Staff"),
		chromedp.SendKeys(chromedp.CSS("#client_id"), scenario.ClientID),
		chromedp.SendKeys(chromedp.CSS("#auth_url"), "not-a-url"),
		chromedp.Click(chromedp.CSS("#seat_deprovision")),
		chromedp.Submit(chromedp.CSS("#name")),
		chromedp.WaitVisible(chromedp.CSS("#client_secret-err .field-errors")))
	mustContain(t, "client secret message", text(t, ctx, "#client_secret-err"), "required")
	mustContain(t, "auth_url message", text(t, ctx, "#auth_url-err"), "not an absolute")
	mustContain(t, "seat message", text(t, ctx, "#seat_deprovision-err"), "cannot be enabled unless user_deprovision")
	screenshot(t, ctx, "idp-form-errors")
	do(t, ctx, "fix the form",
		chromedp.SetValue(chromedp.CSS("#auth_url"), st.op.AuthURL()),
		chromedp.SetValue(chromedp.CSS("#token_url"), st.op.TokenURL()),
		chromedp.SetValue(chromedp.CSS("#certs_url"), st.op.JWKSURL()),
		chromedp.SetValue(chromedp.CSS("#issuer"), st.op.Issuer()),
		chromedp.SendKeys(chromedp.CSS("#client_secret"), st.secret),
		chromedp.Click(chromedp.CSS("#user_deprovision")),
		chromedp.Click(chromedp.CSS("#seat_deprovision")), // back off: user deprovisioning only
		chromedp.SetValue(chromedp.CSS("#identity_update_behavior"), "automatic"),
		chromedp.Submit(chromedp.CSS("#name")),
		chromedp.WaitVisible(chromedp.CSS("#scim-secret")))
	secret := strings.TrimSpace(text(t, ctx, "#scim-secret"))
	baseURL := strings.TrimSpace(text(t, ctx, "#scim-url"))
	if !strings.HasPrefix(secret, "scim_") || !strings.Contains(baseURL, "/populations/") {
		t.Fatalf("secret page shows %q and %q", secret, baseURL)
	}
	// The copy button is hidden in the markup; console.js shows it (progressive enhancement).
	do(t, ctx, "copy button shown by console.js", chromedp.WaitVisible(chromedp.CSS(`button.copy[data-copy=scim-secret]`)))
	screenshot(t, ctx, "idp-secret")
	parts := strings.Split(baseURL, "/")
	idp := parts[len(parts)-3]

	// Provision people over SCIM with the secret the page showed.
	sc := &scenario.SCIM{BaseURL: baseURL, Secret: secret, Dialect: scenario.Okta}
	if err := sc.Ready(bg, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	lena, _ := scenario.NewPerson(st.op, "lena.schmidt@example.com", "Lena", "Schmidt")
	lars, _ := scenario.NewPerson(st.op, "lars.berg@example.com", "Lars", "Berg")
	anna, _ := scenario.NewPerson(st.op, "anna.lenz@example.com", "Anna", "Lenz")
	for _, p := range []*scenario.Person{lena, lars, anna} {
		if r, err := sc.CreateUser(bg, p.User); err != nil || r.Err(201) != nil {
			t.Fatalf("SCIM create %s: %v %v", p.User.UserName, err, r.Err(201))
		}
	}
	g := &scenario.SCIMGroup{DisplayName: "Engineering"}
	if r, err := sc.CreateGroup(bg, g); err != nil || r.Err(201) != nil {
		t.Fatalf("SCIM group: %v %v", err, r.Err(201))
	}
	if r, err := sc.AddMembers(bg, g, lena.User, lars.User); err != nil || r.Err(200, 204) != nil {
		t.Fatalf("SCIM members: %v %v", err, r.Err(200, 204))
	}
	if err := scenario.NewBrowser(st.ep.Auth, nil).WaitIdP(bg, idp, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	lenaB, larsB := scenario.NewBrowser(st.ep.Auth, nil), scenario.NewBrowser(st.ep.Auth, nil)
	for _, l := range []struct {
		b *scenario.Browser
		p *scenario.Person
	}{{lenaB, lena}, {larsB, lars}} {
		if r, err := l.b.Login(bg, idp, l.p.Sub); err != nil || !r.OK() {
			t.Fatalf("login %s: %v %+v", l.p.Sub, err, r)
		}
	}

	// Find Lena by a name prefix and open her page.
	do(t, ctx, "people search",
		chromedp.Navigate(st.ep.Admin+"/ui/people"),
		chromedp.SendKeys(chromedp.CSS("#q"), "schmi"),
		chromedp.Submit(chromedp.CSS("#q")),
		waitURL("q=schmi"), // the list before the search has people links too
		chromedp.WaitVisible(chromedp.CSS(`a[href^="/ui/people/"]`)))
	mustContain(t, "search result", text(t, ctx, "main"), "lena.schmidt@example.com", "1–1 of 1")
	do(t, ctx, "people list", chromedp.Navigate(st.ep.Admin+"/ui/people?idp_id="+idp), chromedp.WaitVisible(chromedp.CSS("tbody")))
	screenshot(t, ctx, "people")
	do(t, ctx, "open Lena", chromedp.Navigate(st.ep.Admin+"/ui/people?q=lena"), chromedp.Click(chromedp.CSS(`a[href^="/ui/people/"]`)),
		chromedp.WaitVisible(chromedp.CSS("#hist-h")))
	mustContain(t, "person page", text(t, ctx, "main"), "Engineering", "active", "held since")
	personURL := location(t, ctx)

	// Revoke: the confirmation page, then a forged CSRF token is refused, then the real one works.
	do(t, ctx, "revoke confirm", chromedp.Click(chromedp.CSS(`a[href$="/revoke"]`)), chromedp.WaitVisible(chromedp.CSS("button.danger")))
	mustContain(t, "confirmation", text(t, ctx, "main"), "Revoke sessions for lena.schmidt@example.com")
	screenshot(t, ctx, "confirm-revoke")
	do(t, ctx, "forged CSRF",
		chromedp.SetValue(chromedp.CSS(`main input[name=csrf]`), "forged"),
		chromedp.Click(chromedp.CSS("main button.danger")),
		chromedp.WaitVisible(chromedp.CSS(".alert")))
	mustContain(t, "CSRF refusal", text(t, ctx, ".alert"), "CSRF check failed")
	if id, status, _ := lenaB.GetIdentity(bg); status != http.StatusOK {
		t.Fatalf("Lena's session ended before the real revoke: %d %+v", status, id)
	}
	do(t, ctx, "revoke", chromedp.Navigate(personURL+"/revoke"), chromedp.Click(chromedp.CSS("main button.danger")),
		chromedp.WaitVisible(chromedp.CSS("#hist-h")))
	mustContain(t, "person after revoke", text(t, ctx, "main"), "identity.user.sessions_revoked")
	screenshot(t, ctx, "person")
	if err := scenario.Eventually(bg, 10*time.Second, func() error {
		if _, status, _ := lenaB.GetIdentity(bg); status == http.StatusOK {
			return fmt.Errorf("Lena's session still valid")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Deactivate Lars over SCIM; the provisioning log shows the PATCH and leads to the revocation.
	if r, err := sc.SetActive(bg, lars.User, false); err != nil || r.Err(200, 204) != nil {
		t.Fatalf("deactivate Lars: %v %v", err, r.Err(200, 204))
	}
	if err := scenario.Eventually(bg, 10*time.Second, func() error {
		if _, status, _ := larsB.GetIdentity(bg); status == http.StatusOK {
			return fmt.Errorf("Lars's session still valid")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "logs",
		chromedp.Navigate(st.ep.Admin+"/ui/logs?idp_id="+idp+"&resource_user_email=lars.berg%40example.com&request_method=PATCH,PUT"),
		chromedp.WaitVisible(chromedp.CSS("table.log")))
	screenshot(t, ctx, "logs")
	do(t, ctx, "what it caused", chromedp.Click(chromedp.CSS(`table.log a[href^="/ui/logs/caused"]`)), chromedp.WaitVisible(chromedp.CSS("#ev-h")))
	mustContain(t, "caused page", text(t, ctx, "main"), "identity.user.sessions_revoked (deprovisioned)", "sessions revoked: deprovisioned")
	took := text(t, ctx, "tr.revocation td:last-child")
	if _, err := time.ParseDuration(strings.TrimSpace(took)); err != nil {
		t.Errorf("revocation row's time taken = %q, want a duration", took)
	}
	screenshot(t, ctx, "caused")

	// The overview now shows the IdP's last SCIM request and the pipeline's consumers.
	do(t, ctx, "overview", chromedp.Navigate(st.ep.Admin+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#pipe-h")))
	mustContain(t, "overview", text(t, ctx, "main"), "Okta Staff", "200 SUCCESS", "identitystore-scim", "Behind head")
	screenshot(t, ctx, "overview")
	do(t, ctx, "IdP list", chromedp.Navigate(st.ep.Admin+"/ui/idps"), chromedp.WaitVisible(chromedp.CSS("tbody")))
	screenshot(t, ctx, "idps")

	// Access: write an application, test it against the registry before saving, save, then edit a
	// policy and test again.
	policies := `[{"name": "engineering", "decision": "allow", "precedence": 1, "include": [{"group": {"name": "Engineering"}}]}]`
	do(t, ctx, "new application",
		chromedp.Navigate(st.ep.Admin+"/ui/access/new"),
		chromedp.SendKeys(chromedp.CSS("#name"), "Grafana"),
		chromedp.SendKeys(chromedp.CSS("#domain"), "grafana.corp.example"),
		chromedp.SetValue(chromedp.CSS("#policies"), policies),
		chromedp.SendKeys(chromedp.CSS("#test_emails"), "lena.schmidt@example.com anna.lenz@example.com"),
		chromedp.Click(chromedp.CSS(`button[value=test]`)),
		chromedp.WaitVisible(chromedp.CSS("#test-result")))
	result := text(t, ctx, "#test-result")
	mustContain(t, "test result", result, "lena.schmidt@example.com\tallow", "anna.lenz@example.com\tdeny")
	do(t, ctx, "save application", chromedp.Click(chromedp.CSS(`button[value=save]`)), chromedp.WaitVisible(chromedp.CSS(`p.ok[role=status]`)))
	edited := `[{"name": "engineering", "decision": "allow", "precedence": 1, "include": [{"group": {"name": "Engineering"}}],
  "exclude": [{"email": {"email": "lena.schmidt@example.com"}}]}]`
	do(t, ctx, "edit policy and test",
		chromedp.SetValue(chromedp.CSS("#policies"), edited),
		chromedp.SendKeys(chromedp.CSS("#test_emails"), "lena.schmidt@example.com lars.berg@example.com"),
		chromedp.Click(chromedp.CSS(`button[value=test]`)),
		chromedp.WaitVisible(chromedp.CSS("#test-result")))
	mustContain(t, "edited test result", text(t, ctx, "#test-result"), "lena.schmidt@example.com\tdeny")
	screenshot(t, ctx, "access-test")
	do(t, ctx, "access list", chromedp.Navigate(st.ep.Admin+"/ui/access"), chromedp.WaitVisible(chromedp.CSS("tbody")))
	mustContain(t, "access list", text(t, ctx, "main"), "grafana.corp.example")
	screenshot(t, ctx, "access")
}

// TestConsoleOIDCSignIn opens the console through the reverse proxy: the browser logs in at the
// test provider through auth, /verify hands the proxy an app token, and the console lets a member of
// the console admin group in without the admin token.
func TestConsoleOIDCSignIn(t *testing.T) {
	bg := context.Background()
	admin, _ := scenario.NewPerson(st.op, "it.admin@corp.example", "Ida", "Admin")
	if r, err := st.corpSCIM.CreateUser(bg, admin.User); err != nil || r.Err(201) != nil {
		t.Fatalf("SCIM create: %v %v", err, r.Err(201))
	}
	g := &scenario.SCIMGroup{DisplayName: consoleGroup}
	if r, err := st.corpSCIM.CreateGroup(bg, g); err != nil || r.Err(201) != nil {
		t.Fatalf("SCIM group: %v %v", err, r.Err(201))
	}
	if r, err := st.corpSCIM.AddMembers(bg, g, admin.User); err != nil || r.Err(200, 204) != nil {
		t.Fatalf("SCIM members: %v %v", err, r.Err(200, 204))
	}
	if err := st.op.SetDefaultUser(admin.Sub); err != nil {
		t.Fatal(err)
	}
	// Once any access application exists (the walkthrough makes one), /verify admits a host only
	// through its own application: publish the console behind one for corp's people.
	proxyHost := strings.TrimPrefix(st.proxy, "http://")
	app := fmt.Sprintf(`{"name": "Console", "domain": %q, "policies": [{"name": "corp", "decision": "allow", "precedence": 1,
		"include": [{"email_domain": {"domain": "corp.example"}}]}]}`, proxyHost)
	req, _ := http.NewRequest("POST", st.ep.Admin+"/api/v1/access/apps", strings.NewReader(app))
	req.Header.Set("Authorization", "Bearer "+st.ep.AdminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create the console's access application: %v %v", res.StatusCode, err)
	}
	res.Body.Close()
	ctx := newChrome(t)
	do(t, ctx, "console through the proxy", chromedp.Navigate(st.proxy+"/ui/"))
	chooseCorp(t, ctx)
	do(t, ctx, "console through the proxy", chromedp.WaitVisible(chromedp.CSS("#pipe-h")))
	who := text(t, ctx, ".signout span")
	if !strings.Contains(who, "it.admin@corp.example") {
		t.Fatalf("signed in as %q, want the OIDC admin", who)
	}
	if loc := location(t, ctx); loc != st.proxy+"/ui/" {
		t.Errorf("after the OIDC login the browser is at %s, want %s/ui/", loc, st.proxy)
	}
	screenshot(t, ctx, "oidc-overview")

	// A signed-in person outside the group gets the sign-in page, not the console.
	outsider, _ := scenario.NewPerson(st.op, "someone@corp.example", "Some", "One")
	if r, err := st.corpSCIM.CreateUser(bg, outsider.User); err != nil || r.Err(201) != nil {
		t.Fatalf("SCIM create: %v %v", err, r.Err(201))
	}
	if err := st.op.SetDefaultUser(outsider.Sub); err != nil {
		t.Fatal(err)
	}
	ctx2 := newChrome(t)
	do(t, ctx2, "outsider through the proxy", chromedp.Navigate(st.proxy+"/ui/people"))
	chooseCorp(t, ctx2)
	do(t, ctx2, "outsider through the proxy", chromedp.WaitVisible(chromedp.CSS("#token")))
	if loc := location(t, ctx2); !strings.HasPrefix(loc, st.proxy+"/ui/signin") {
		t.Errorf("outsider ended at %s, want the console's sign-in page", loc)
	}
}
