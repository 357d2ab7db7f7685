package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/testkit/oidctest"
)

// adminToken is the admin API bearer of every stack.
const adminToken = "reliability-admin-token"

// clientID is the OIDC client id at the test provider.
const clientID = "scimflow"

// stackOptions shape a stack.
type stackOptions struct {
	// natsURL is what scim-ingest and identity-store dial (comma-separated for a cluster).
	natsURL string
	// authNATSURL is what auth dials; default natsURL (a proxy in the partition scenario).
	authNATSURL string
	// replicas is SCIMFLOW_NATS_REPLICAS; default 1.
	replicas int
	// env adds variables per service name.
	env map[string][]string
	// dataDirs overrides a service's data dir (the disk-full scenario mounts a tmpfs).
	dataDirs map[string]string
	// providerAddr is where the test OpenID provider listens; default 127.0.0.1:0. The compose
	// tests use an address that both the host and the containers reach, so one issuer URL works
	// on both sides.
	providerAddr string
}

// stack is the three services against NATS, plus the test OpenID provider and one IdP.
type stack struct {
	t      testing.TB
	dir    string
	opts   stackOptions
	ingest *service
	store  *service
	auth   *service

	provider     *oidctest.Provider
	clientSecret string
	idp          idpInfo
	// adminToken overrides the package's adminToken (the compose tests use the one in .env).
	adminToken string
	// idpName names the next IdP createIdP makes; default "reliability". Names are unique.
	idpName string
}

// idpInfo is what the admin API returned for the stack's IdP.
type idpInfo struct {
	ID      string
	Secret  string
	SCIMURL string
}

// newStack prepares and starts the services and creates an IdP (user_deprovision on, automatic).
func newStack(t testing.TB, dir string, o stackOptions) *stack {
	t.Helper()
	if o.replicas == 0 {
		o.replicas = 1
	}
	if o.authNATSURL == "" {
		o.authNATSURL = o.natsURL
	}
	s := &stack{t: t, dir: dir, opts: o}
	ingestAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	storeAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	authAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	common := []string{
		"SCIMFLOW_ADMIN_TOKEN=" + adminToken,
		fmt.Sprintf("SCIMFLOW_NATS_REPLICAS=%d", o.replicas),
		"SCIMFLOW_LOG_FORMAT=text",
		"SCIMFLOW_SCIM_INGEST_LISTEN=" + ingestAddr,
		"SCIMFLOW_SCIM_INGEST_BASE_URL=http://" + ingestAddr,
		"SCIMFLOW_SCIM_INGEST_RATE_LIMIT=0",
		"SCIMFLOW_IDENTITY_STORE_LISTEN=" + storeAddr,
		"SCIMFLOW_AUTH_LISTEN=" + authAddr,
		"SCIMFLOW_AUTH_EXTERNAL_URL=http://" + authAddr,
		"SCIMFLOW_AUTH_REPLICA_ID=reliability",
		"SCIMFLOW_AUTH_REVOCATION_MAX_STALENESS=2s",
	}
	mk := func(name, addr, url string) *service {
		dd := filepath.Join(dir, name)
		if o.dataDirs[name] != "" {
			dd = o.dataDirs[name]
		}
		if err := os.MkdirAll(dd, 0o750); err != nil {
			t.Fatal(err)
		}
		env := append(append([]string{}, common...), "SCIMFLOW_NATS_URL="+url, "SCIMFLOW_DATA_DIR="+dd)
		env = append(env, o.env[name]...)
		return &service{svc: name, addr: addr, dataDir: dd, proc: proc{
			name: name, args: []string{scimflowBin, name, "-config", "/dev/null"}, env: env,
			log: filepath.Join(dir, name+".log"),
		}}
	}
	s.ingest = mk("scim-ingest", ingestAddr, o.natsURL)
	s.store = mk("identity-store", storeAddr, o.natsURL)
	s.auth = mk("auth", authAddr, o.authNATSURL)
	t.Cleanup(func() {
		for _, sv := range s.services() {
			sv.kill(t)
		}
		if s.provider != nil {
			s.provider.Close()
		}
		if t.Failed() {
			keep := keepDir(t)
			for _, sv := range s.services() {
				t.Logf("%s log tail:\n%s", sv.svc, sv.logTail(40))
				if b, err := os.ReadFile(sv.log); err == nil {
					os.WriteFile(filepath.Join(keep, sv.svc+".log"), b, 0o600)
				}
			}
			t.Logf("full service logs kept in %s", keep)
		}
	})
	for _, sv := range s.services() {
		sv.start(t)
	}
	for _, sv := range s.services() {
		sv.waitReady(t, 60*time.Second)
	}
	s.createIdP()
	return s
}

func (s *stack) services() []*service { return []*service{s.ingest, s.store, s.auth} }

// admin sends an admin API request and decodes the envelope's result into out.
func (s *stack) admin(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.store.baseURL()+path, rd)
	if err != nil {
		return 0, err
	}
	token := adminToken
	if s.adminToken != "" {
		token = s.adminToken
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s = %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		var env struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if err := json.Unmarshal(env.Result, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// createIdP starts the test OpenID provider and creates an IdP logging in there with SCIM enabled,
// identity_update_behavior automatic and user_deprovision on; it waits until scim-ingest accepts
// its secret.
func (s *stack) createIdP() {
	t := s.t
	t.Helper()
	s.clientSecret = "reliability-client-secret"
	p, err := oidctest.Start(oidctest.Options{Addr: s.opts.providerAddr, ClientID: clientID, ClientSecret: s.clientSecret})
	if err != nil {
		t.Fatal(err)
	}
	s.provider = p
	name := s.idpName
	if name == "" {
		name = "reliability"
	}
	spec := map[string]any{
		"name": name, "type": "oidc",
		"config": map[string]any{
			"client_id": clientID, "client_secret": s.clientSecret, "issuer": p.Issuer(),
			"auth_url": p.AuthURL(), "token_url": p.TokenURL(), "certs_url": p.JWKSURL(),
			"pkce_enabled": true, "email_claim_name": "email", "scopes": []string{"openid", "email", "profile"},
		},
		"scim_config": map[string]any{"enabled": true, "identity_update_behavior": "automatic", "user_deprovision": true, "seat_deprovision": false},
	}
	var out struct {
		ID         string `json:"id"`
		SCIMConfig struct {
			Secret      string `json:"secret"`
			SCIMBaseURL string `json:"scim_base_url"`
		} `json:"scim_config"`
	}
	ctx := context.Background()
	err = poll(ctx, 30*time.Second, func() error {
		_, err := s.admin(ctx, http.MethodPost, "/api/v1/identity_providers", spec, &out)
		return err
	})
	if err != nil {
		t.Fatalf("create IdP: %v", err)
	}
	s.idp = idpInfo{ID: out.ID, Secret: out.SCIMConfig.Secret, SCIMURL: s.ingest.baseURL() + "/populations/" + out.ID + "/scim/v2"}
	if !strings.HasSuffix(out.SCIMConfig.SCIMBaseURL, "/populations/"+out.ID+"/scim/v2") {
		t.Fatalf("scim_base_url = %q, want …/populations/%s/scim/v2", out.SCIMConfig.SCIMBaseURL, out.ID)
	}
	c := s.scim()
	err = poll(ctx, 30*time.Second, func() error {
		r := c.do(ctx, http.MethodGet, "/Users?count=1", nil)
		if r.status != http.StatusOK {
			return fmt.Errorf("GET /Users = %d %v %s", r.status, r.err, r.body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scim-ingest does not accept the new IdP: %v", err)
	}
}

// scim returns a SCIM client of the stack's IdP.
func (s *stack) scim() *scimClient {
	return &scimClient{base: s.idp.SCIMURL, secret: s.idp.Secret, hc: &http.Client{Timeout: 10 * time.Second}}
}
