//go:build proxies && unix

package e2e

// The reverse-proxy snippets of the docs, run for real: `make proxy-test` (build tag proxies, so
// not part of go test ./...; .ci/run installs Debian's nginx and caddy first). Each snippet is
// extracted from the Markdown by the test and changed only as the docs allow: host names and
// ports, certificate paths, and for Caddy (no internet, so no ACME) `auto_https off` with http://
// site addresses. Clients resolve every *.example.com name to the proxy on loopback.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/scenario"
)

// fencedBlocks returns the bodies of the ```lang blocks of a Markdown file under docs/.
func fencedBlocks(t *testing.T, doc, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("docs/%s has no %s block", doc, lang)
	}
	return out
}

// snippet returns the one block of lang in doc that contains marker.
func snippet(t *testing.T, doc, lang, marker string) string {
	t.Helper()
	var found []string
	for _, b := range fencedBlocks(t, doc, lang) {
		if strings.Contains(b, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("docs/%s: %d %s blocks contain %q, want 1", doc, len(found), lang, marker)
	}
	return found[0]
}

// replaceAll applies the substitutions and fails if one of them matches nothing, so a doc change
// that the test no longer understands fails instead of running something else.
func replaceAll(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("snippet has no %q to substitute:\n%s", pairs[i], s)
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// tlsFiles writes a self-signed certificate and key for host into dir and adds it to pool.
func tlsFiles(t *testing.T, dir, host string, pool *x509.CertPool) (crt, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	crt, key = filepath.Join(dir, host+".crt"), filepath.Join(dir, host+".key")
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return crt, key
}

// upstream is the protected application: it records the identity headers of the last request.
type upstream struct {
	srv  *http.Server
	addr string
	mu   sync.Mutex // guards last
	last http.Header
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: ln.Addr().String()}
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.mu.Unlock()
		io.WriteString(w, "the application\n")
	})}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// proxyCase is one snippet under test.
type proxyCase struct {
	name string
	// config returns the proxy's configuration from the snippet, given the ports and files.
	config func(t *testing.T, p proxyPorts) string
	// start runs the proxy on the configuration file (validated first).
	start func(t *testing.T, dir, conf string)
	// tls: the proxy serves https (nginx with the docs' certificate lines).
	tls bool
	// authViaProxy: the snippet publishes auth at auth.example.com; otherwise the browser reaches
	// auth directly (getting-started's block covers only the application).
	authViaProxy bool
}

type proxyPorts struct {
	proxy, auth, app string // host:port
	dir              string
	crt, key         map[string]string
}

// TestProxySnippets runs each documented proxy block in front of `scimflow serve`: no session →
// the login page; logged in → the application sees the identity; forged identity headers are
// replaced; SCIM deprovision → back to the login page.
func TestProxySnippets(t *testing.T) {
	nginxStart := func(t *testing.T, dir, conf string) {
		bin, err := exec.LookPath("nginx")
		if err != nil {
			t.Fatalf("nginx (apt-get install nginx): %v", err)
		}
		if out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t with the documented block: %v\n%s", err, out)
		}
		startProxyProc(t, dir, bin, "-p", dir, "-c", conf, "-g", "daemon off;")
	}
	nginxWrap := func(p proxyPorts, body string) string {
		temp := ""
		for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
			os.MkdirAll(filepath.Join(p.dir, d), 0o777)
			temp += fmt.Sprintf("    %s_temp_path %s;\n", d, filepath.Join(p.dir, d))
		}
		return fmt.Sprintf("pid %s/nginx.pid;\nerror_log %s/error.log;\nevents {}\nhttp {\n    access_log off;\n%s%s\n}\n",
			p.dir, p.dir, temp, body)
	}
	cases := []proxyCase{
		{
			name: "nginx reverse-proxies.md", tls: true, authViaProxy: true, start: nginxStart,
			config: func(t *testing.T, p proxyPorts) string {
				s := replaceAll(t, snippet(t, "reverse-proxies.md", "nginx", "upstream scimflow_auth"),
					"scimflow-auth:8082", p.auth, "app:3000", p.app, "listen 443 ssl;", "listen "+p.proxy+" ssl;",
					"/etc/nginx/tls/auth.example.com.crt", p.crt["auth.example.com"], "/etc/nginx/tls/auth.example.com.key", p.key["auth.example.com"],
					"/etc/nginx/tls/app.example.com.crt", p.crt["app.example.com"], "/etc/nginx/tls/app.example.com.key", p.key["app.example.com"])
				return nginxWrap(p, s)
			},
		},
		{
			name: "nginx getting-started.md", tls: true, start: nginxStart,
			config: func(t *testing.T, p proxyPorts) string {
				s := replaceAll(t, snippet(t, "getting-started.md", "nginx", "server_name app.example.com"),
					"127.0.0.1:8082", p.auth, "127.0.0.1:3000", p.app, "listen 443 ssl;", "listen "+p.proxy+" ssl;",
					"/etc/nginx/tls/app.example.com.crt", p.crt["app.example.com"], "/etc/nginx/tls/app.example.com.key", p.key["app.example.com"])
				return nginxWrap(p, s)
			},
		},
		{
			name: "caddy reverse-proxies.md", authViaProxy: true,
			config: func(t *testing.T, p proxyPorts) string {
				_, port, _ := net.SplitHostPort(p.proxy)
				s := replaceAll(t, snippet(t, "reverse-proxies.md", "caddyfile", "forward_auth"),
					"scimflow-auth:8082", p.auth, "app:3000", p.app,
					"auth.example.com {", "http://auth.example.com:"+port+" {", "app.example.com {", "http://app.example.com:"+port+" {")
				return "{\n\tauto_https off\n\tadmin off\n\thttp_port " + port + "\n}\n\n" + s
			},
			start: func(t *testing.T, dir, conf string) {
				bin, err := exec.LookPath("caddy")
				if err != nil {
					t.Fatalf("caddy (apt-get install caddy): %v", err)
				}
				cmd := exec.Command(bin, "validate", "--config", conf, "--adapter", "caddyfile")
				cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("caddy validate with the documented block: %v\n%s", err, out)
				}
				startProxyProc(t, dir, bin, "run", "--config", conf, "--adapter", "caddyfile")
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runProxyCase(t, c) })
	}
}

// startProxyProc runs the proxy until the test ends (killed with the test binary too), in its own
// process group, which the cleanup stops as a whole and checks is empty: no worker outlives it.
func startProxyProc(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.SysProcAttr = proxyAttr()
	out := filepath.Join(dir, "proxy.log")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	t.Cleanup(func() {
		if err := stopProxyGroup(cmd.Process.Pid, done); err != nil {
			t.Errorf("stopping %s: %v", filepath.Base(bin), err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(out)
			e, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("proxy output:\n%s\n%s", tail(string(b), 4000), tail(string(e), 4000))
		}
	})
}

func runProxyCase(t *testing.T, c proxyCase) {
	ctx := context.Background()
	dir := t.TempDir()
	pool := x509.NewCertPool()
	p := proxyPorts{dir: dir, crt: map[string]string{}, key: map[string]string{}}
	for _, h := range []string{"auth.example.com", "app.example.com"} {
		p.crt[h], p.key[h] = tlsFiles(t, dir, h, pool)
	}
	proxyAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p.proxy = proxyAddr
	_, port, _ := net.SplitHostPort(proxyAddr)
	scheme := "http"
	if c.tls {
		scheme = "https"
	}
	appOrigin := scheme + "://app.example.com:" + port

	// scimflow serve: auth published at auth.example.com through the proxy, or reached directly.
	srv, err := newServer(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	authURL := srv.ep.Auth
	cookie := "scimflow_session"
	if c.authViaProxy {
		authURL = scheme + "://auth.example.com:" + port
		srv.env = append(srv.env, "SCIMFLOW_AUTH_COOKIE_DOMAIN=example.com")
		if c.tls {
			cookie = "__Secure-scimflow_session"
		}
	}
	srv.env = append(srv.env, "SCIMFLOW_AUTH_EXTERNAL_URL="+authURL, "SCIMFLOW_AUTH_ALLOWED_REDIRECT_ORIGINS="+appOrigin)
	op, secret, err := scenario.StartProvider()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	e := &env{srv: srv, op: op, secret: secret, admin: srv.ep.AdminClient()}
	t.Cleanup(func() { srv.stop(9) })
	e.dumpOnFailure(t)
	p.auth = strings.TrimPrefix(srv.ep.Auth, "http://")
	app := startUpstream(t)
	p.app = app.addr

	conf := filepath.Join(dir, "proxy.conf")
	if err := os.WriteFile(conf, []byte(c.config(t, p)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t, dir, conf)
	waitTCPAddr(t, proxyAddr)

	// Every *.example.com name is the proxy; anything else (the OpenID provider, auth when it is
	// reached directly) is dialled as is.
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".example.com") {
				addr = proxyAddr
			}
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		},
	}
	client := &http.Client{Transport: tr, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(session string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, appOrigin+"/dashboard?tab=1", nil)
		req.Header.Set("Accept", "text/html,application/xhtml+xml")
		if session != "" {
			req.Header.Set("Cookie", cookie+"="+session)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET the application through the proxy: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	forged := map[string]string{
		"X-Scimflow-User-Id": "forged-id", "X-Scimflow-Email": "mallory@example.com", "X-Scimflow-Idp": "forged-idp",
		"X-Scimflow-Groups":        "admins",
		"X-Scimflow-Jwt-Assertion": "forged.jwt.value",
	}
	wantLogin := func(step string, resp *http.Response, body string) {
		t.Helper()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, authURL+"/login?") {
			t.Fatalf("%s: GET app = %d Location %q %.200s, want 302 to %s/login?…", step, resp.StatusCode, loc, body, authURL)
		}
	}

	// 1. No session (and forged headers): the login page, and the application never sees the request.
	resp, body := get("", forged)
	wantLogin("no session", resp, body)
	if app.lastHeader() != nil {
		t.Fatalf("the application was reached without a session: %v", app.lastHeader())
	}

	// 2. A person provisioned over SCIM logs in (through the proxy when it publishes auth).
	tn := newTenant(t, e, "proxy", scenario.Okta, "automatic", true, false)
	person := tn.person("ada", "Ada", "Lovelace")
	tn.must(tn.scim.CreateUser(ctx, person.User))
	b := scenario.NewBrowser(authURL, tr)
	b.SessionCookieName = cookie
	res, err := b.Login(ctx, tn.idp.ID, person.Sub)
	if err != nil || !res.OK() {
		t.Fatalf("login at %s: %+v %v", authURL, res, err)
	}
	session := b.Session()

	// 3. Logged in, with forged identity headers: the application sees auth's identity only.
	resp, body = get(session, forged)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logged in: GET app = %d %.300s, want 200", resp.StatusCode, body)
	}
	h := app.lastHeader()
	if got := h.Get("X-Scimflow-Email"); got != person.User.UserName {
		t.Errorf("application saw X-Scimflow-Email %q, want %q", got, person.User.UserName)
	}
	if got := h.Get("X-Scimflow-User-Id"); got == "" || got == forged["X-Scimflow-User-Id"] {
		t.Errorf("application saw X-Scimflow-User-Id %q, want auth's user id", got)
	}
	if got := h.Get("X-Scimflow-Idp"); got != tn.idp.ID {
		t.Errorf("application saw X-Scimflow-Idp %q, want %q (auth's)", got, tn.idp.ID)
	}
	if got := h.Get("X-Scimflow-Jwt-Assertion"); got == "" || got == forged["X-Scimflow-Jwt-Assertion"] {
		t.Errorf("application saw X-Scimflow-Jwt-Assertion %q, want auth's signed assertion", got)
	}
	// Ada is in no SCIM group: auth answers an empty X-Scimflow-Groups, which must clear the
	// client's "admins".
	if got := h.Values("X-Scimflow-Groups"); strings.Contains(strings.Join(got, ","), "admins") {
		t.Errorf("application saw the forged X-Scimflow-Groups %q", got)
	}

	// 4. Deprovisioned over SCIM: the next request goes back to the login page.
	tn.must(tn.scim.SetActive(ctx, person.User, false))
	if err := scenario.Eventually(ctx, waitTimeout, func() error {
		resp, _ := get(session, nil)
		if resp.StatusCode != http.StatusFound {
			return fmt.Errorf("GET app = %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		t.Fatalf("after the SCIM deprovision: %v, want the login redirect", err)
	}
	resp, body = get(session, nil)
	wantLogin("deprovisioned", resp, body)
}

func waitTCPAddr(t *testing.T, addr string) {
	t.Helper()
	if err := scenario.Eventually(context.Background(), 20*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("proxy not listening on %s: %v", addr, err)
	}
}
