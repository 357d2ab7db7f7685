package app_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/devidp"
	"github.com/scimflow/scimflow/internal/scenario"
)

// TestConsoleShowsAdmissionControl drives scim-ingest's admission control on and off inside
// `scimflow serve` (NATS permissions enforced) and reads it where an admin would, on the console's
// overview: scim-ingest publishes its state in the admission bucket, identity-store reads it. The
// pipeline is made to lag the way a production one can: the SCIM stream reaches a limit (its
// max_msgs lowered to what it holds, through identity-store's manage permission), so scim-ingest's
// outbox cannot publish and its oldest record ages past admission_max_lag; raising the limit
// again lets the outbox drain and admission control recovers.
func TestConsoleShowsAdmissionControl(t *testing.T) {
	t.Parallel()
	op, err := devidp.Start(devidp.Options{ClientID: "console-admission", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	scimAddr, adminAddr := freeAddr(t), freeAddr(t)
	fx := startServe(t, map[string]string{
		"SCIMFLOW_SCIM_INGEST_LISTEN":                 scimAddr,
		"SCIMFLOW_SCIM_INGEST_BASE_URL":               "http://" + scimAddr,
		"SCIMFLOW_IDENTITY_STORE_LISTEN":              adminAddr,
		"SCIMFLOW_SCIM_INGEST_ADMISSION_MAX_LAG":      "300ms",
		"SCIMFLOW_SCIM_INGEST_RATE_LIMIT":             "0",
		"SCIMFLOW_IDENTITY_STORE_CONSOLE_SESSION_TTL": "1h",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := &scenario.Admin{BaseURL: "http://" + adminAddr, Token: fx.file.AdminToken}
	idp, err := admin.CreateIdP(ctx, scenario.IdPSpec{Name: "Admission", Config: scenario.OIDCConfig{ClientID: "console-admission", ClientSecret: "secret",
		Issuer: op.Issuer(), AuthURL: op.AuthURL(), TokenURL: op.TokenURL(), CertsURL: op.JWKSURL()},
		SCIMConfig: scenario.SCIMConfig{Enabled: true, UserDeprovision: true, IdentityUpdateBehavior: "automatic"}})
	if err != nil {
		t.Fatal(err)
	}
	scim := &scenario.SCIM{BaseURL: idp.SCIMConfig.SCIMBaseURL, Secret: idp.SCIMConfig.Secret, NoRetry: true}
	if err := scim.Ready(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// Sign in to the console with the admin token.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	base := "http://" + adminAddr
	get := func(path string) string {
		t.Helper()
		res, err := browser.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d:\n%s", path, res.StatusCode, b)
		}
		return string(b)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(get("/ui/signin"))
	if csrf == nil {
		t.Fatal("no CSRF token on the sign-in page")
	}
	if res, err := browser.PostForm(base+"/ui/signin", url.Values{"csrf": {csrf[1]}, "token": {fx.file.AdminToken}}); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	waitOverview := func(what, want string) string {
		t.Helper()
		var page string
		deadline := time.Now().Add(60 * time.Second)
		for {
			page = get("/ui/")
			if strings.Contains(page, want) {
				return page
			}
			if time.Now().After(deadline) {
				t.Fatalf("overview never showed admission control %s (%q):\n%s", what, want, page)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	const on, off = `<strong class="bad">On</strong>`, `<span class="ok">Off</span>`
	waitOverview("off", off)

	// The SCIM stream at its limit: scim-ingest's outbox cannot publish.
	nc := connectAs(t, "nats://"+fx.natsAddr, filepath.Join(fx.dataDir, "nats-credentials", "identity-store.nk"), "identity-store")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	setMaxMsgs := func(n int64) {
		t.Helper()
		st, err := js.Stream(ctx, events.StreamSCIM)
		if err != nil {
			t.Fatal(err)
		}
		cfg := st.CachedInfo().Config
		cfg.MaxMsgs = n
		if n > 0 {
			cfg.MaxMsgs = int64(st.CachedInfo().State.Msgs)
		}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatalf("update stream %s max_msgs: %v", events.StreamSCIM, err)
		}
	}
	setMaxMsgs(1)
	if r, err := scim.CreateUser(ctx, &scenario.SCIMUser{UserName: "queued@admission.test", GivenName: "Q", FamilyName: "Ueued", Active: true}); err != nil || r.Status != http.StatusCreated {
		t.Fatalf("create before admission control reacts = %v %v, want 201", r.Status, err)
	}
	page := waitOverview("on", on)
	// The lag, and the hop it comes from: the outbox, which cannot publish.
	if !regexp.MustCompile(`<td class="num warn">\d{3,} ms / 300 ms <span class="muted">\(scim_outbox\)</span></td>`).MatchString(page) {
		t.Errorf("overview with admission control on lacks the lag beyond the 300 ms bound from hop scim_outbox:\n%s", page)
	}
	// (CreateUser reports the refusal as an error too; the status is what counts.)
	if r, _ := scim.CreateUser(ctx, &scenario.SCIMUser{UserName: "refused@admission.test", GivenName: "R", FamilyName: "Efused", Active: true}); r.Status != http.StatusTooManyRequests {
		t.Errorf("create while the overview shows admission control on = %d, want 429", r.Status)
	}

	setMaxMsgs(-1)
	waitOverview("off again", off)
}

// TestAdmissionSeesAuthReplicas: inside `scimflow serve`, with NATS permissions enforced, scim-ingest's
// admission control finds the running auth replica through its lease (auth_replicas) and measures its
// IDENTITY consumer: the per-hop gauge has a series for it.
func TestAdmissionSeesAuthReplicas(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	startServe(t, map[string]string{"SCIMFLOW_SCIM_INGEST_METRICS_LISTEN": metrics})
	want := `scimflow_scim_ingest_admission_hop_lag_seconds{hop="auth_replica",replica_id="`
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(body, want) {
		if time.Now().After(deadline) {
			t.Fatalf("scim-ingest metrics have no %s…} series:\n%s", want, body)
		}
		time.Sleep(100 * time.Millisecond)
		res, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		body = string(b)
	}
}
