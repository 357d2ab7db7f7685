package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/app"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveFixture is `scimflow serve` run in-process by app.Run, with NATS exposed on nats.listen.
type serveFixture struct {
	dataDir, natsAddr, authURL string
	file                       app.File
}

func startServe(t *testing.T, extra map[string]string) *serveFixture {
	t.Helper()
	fx := &serveFixture{dataDir: t.TempDir(), natsAddr: freeAddr(t)}
	authAddr := freeAddr(t)
	fx.authURL = "http://" + authAddr
	env := map[string]string{
		"SCIMFLOW_DATA_DIR":              fx.dataDir,
		"SCIMFLOW_ADMIN_TOKEN":           strings.Repeat("a", 40),
		"SCIMFLOW_NATS_LISTEN":           fx.natsAddr,
		"SCIMFLOW_SCIM_INGEST_LISTEN":    freeAddr(t),
		"SCIMFLOW_IDENTITY_STORE_LISTEN": freeAddr(t),
		"SCIMFLOW_AUTH_LISTEN":           authAddr,
		"SCIMFLOW_AUTH_EXTERNAL_URL":     fx.authURL,
		// Free ports, not the defaults 127.0.0.1:9080-9082: tests run in parallel.
		"SCIMFLOW_SCIM_INGEST_METRICS_LISTEN":    freeAddr(t),
		"SCIMFLOW_IDENTITY_STORE_METRICS_LISTEN": freeAddr(t),
		"SCIMFLOW_AUTH_METRICS_LISTEN":           freeAddr(t),
	}
	for k, v := range extra {
		env[k] = v
	}
	f, err := app.Load("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	fx.file = f
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, f, app.AllServices, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("app.Run = %v", err)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(fx.authURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return fx
			}
		}
		select {
		case err := <-done:
			t.Fatalf("app.Run ended before auth was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("auth not ready after 60s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestForgedSessionFromNATSIsRefused is the attack of docs/security.md, finding 1: someone who can reach
// serve's NATS listener reads auth's signing key from the auth_keys bucket and signs a session
// for the CEO in the superadmins group. Anonymous clients must be refused, roles other than auth
// must not read the bucket, and even what the auth role reads must not let anyone sign a session
// /verify accepts.
func TestForgedSessionFromNATSIsRefused(t *testing.T) {
	t.Parallel()
	fx := startServe(t, nil)
	url := "nats://" + fx.natsAddr
	credDir := filepath.Join(fx.dataDir, "nats-credentials")

	// 1. Anonymous.
	if nc, err := nats.Connect(url, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Errorf("anonymous connect to nats.listen = nil error, want an authorization violation")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("anonymous connect = %v, want %v", err, nats.ErrAuthorization)
	}

	// 2. The other roles' credentials (an attacker who took over scim-ingest or identity-store).
	for _, role := range []string{"scim-ingest", "identity-store"} {
		nc := connectAs(t, url, filepath.Join(credDir, role+".nk"), role)
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if kv, err := js.KeyValue(ctx, "auth_keys"); err == nil {
			if _, err := kv.Get(ctx, "keyset"); err == nil {
				t.Errorf("%s: read auth_keys, want refused", role)
			}
		}
		cancel()
		nc.Close()
	}

	// 3. Even the auth role's view of the bucket does not let anyone sign: the stored keys are
	// sealed with the key-encryption key, which never travels over NATS.
	nc := connectAs(t, url, filepath.Join(credDir, "auth.nk"), "auth")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "auth_keys")
	if err != nil {
		t.Fatalf("auth role: KeyValue(auth_keys) = %v", err)
	}
	e, err := kv.Get(ctx, "keyset")
	if err != nil {
		t.Fatalf("auth role: Get(auth_keys/keyset) = %v", err)
	}
	stolen := privateKeysIn(e.Value())
	if len(stolen) > 0 {
		t.Errorf("auth_keys holds %d private keys in the clear, want only ciphertext", len(stolen))
	}
	kid := currentKID(t, fx.authURL)
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	candidates := append(stolen, attacker)
	for i, k := range candidates {
		tok := forgeSession(t, k, kid, fx.authURL)
		req, _ := http.NewRequest("GET", fx.authURL+"/verify", nil)
		req.AddCookie(&http.Cookie{Name: "scimflow_session", Value: tok})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("/verify with a session forged by key %d of %d = %d (email %q, groups %q), want 401",
				i+1, len(candidates), resp.StatusCode, resp.Header.Get("X-Scimflow-Email"), resp.Header.Get("X-Scimflow-Groups"))
		}
	}
}

// connectAs connects with an nkey seed file as role (replies under the role's inbox prefix).
func connectAs(t *testing.T, url, seedFile, role string) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.Timeout(5 * time.Second), nats.CustomInboxPrefix("_INBOX." + role),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})} // refusals are expected
	if _, err := os.Stat(seedFile); err == nil {
		o, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, o)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	return nc
}

// privateKeysIn finds every PKCS#8 EC private key anywhere in a JSON document (base64 strings).
func privateKeysIn(b []byte) []*ecdsa.PrivateKey {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	var out []*ecdsa.PrivateKey
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		case string:
			var der []byte
			if json.Unmarshal([]byte(`"`+x+`"`), &der) == nil {
				if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
					if ek, ok := k.(*ecdsa.PrivateKey); ok {
						out = append(out, ek)
					}
				}
			}
		}
	}
	walk(v)
	return out
}

// currentKID reads the kid auth publishes at /certs, so the forged token names a key auth knows.
func currentKID(t *testing.T, authURL string) string {
	t.Helper()
	resp, err := http.Get(authURL + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("/certs: %v, %d keys", err, len(set.Keys))
	}
	return set.Keys[0].KeyID
}

// forgeSession signs the session claims with key, naming kid.
func forgeSession(t *testing.T, key *ecdsa.PrivateKey, kid, issuer string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": issuer, "aud": "scimflow-auth-session", "typ": "session",
		"sub": "00000000-0000-0000-0000-000000000001", "sid": "forged-session-id-forged-session-id",
		"idp": "okta", "email": "ceo@x.com", "groups": []map[string]string{{"name": "superadmins"}},
		"iat": now.Unix(), "iat_ns": now.UnixNano(), "exp": now.Add(time.Hour).Unix(),
	}
	payload, _ := json.Marshal(claims)
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
