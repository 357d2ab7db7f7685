package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/natstest"
)

// TestReplayRebuildsIdenticalRegistry: events applied live by serve, then `scimflow replay
// identity-store` into a fresh file; the canonical dumps of the live and rebuilt files are equal.
func TestReplayRebuildsIdenticalRegistry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pt := newPorts(t)
	env := append(servEnv(dir, pt), "SCIMFLOW_ADMIN_TOKEN=replay-test-admin-token-0123456789")
	p := startProc(t, env, "serve", "-config", "/dev/null")
	waitReady(t, p, pt)

	nc := connectRole(t, dir, pt.nats, "scim-ingest")
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	pol := events.Policy{IdentityUpdateBehavior: events.UpdateAutomatic, UserDeprovision: true, SeatDeprovision: true}
	var evs []events.Event
	for i := 0; i < 20; i++ {
		email := fmt.Sprintf("user%d@example.com", i)
		evs = append(evs, events.New("idp1", t0.Add(time.Duration(i)*time.Millisecond), "req", "", events.SCIMUserUpserted{
			UserID: fmt.Sprintf("u%d", i), UserName: email, Email: email, Active: i%3 != 0, Attributes: map[string]any{"userName": email},
			Changed: []string{"userName"}, Created: true, ResourceVersion: 1, Policy: pol}))
	}
	evs = append(evs, events.New("idp1", t0.Add(time.Second), "req", "", events.SCIMGroupUpserted{GroupID: "g1", DisplayName: "Eng", Created: true, ResourceVersion: 1, Policy: pol}))
	evs = append(evs, events.New("idp1", t0.Add(time.Second), "req", "", events.SCIMGroupMembers{GroupID: "g1", DisplayName: "Eng", Added: []string{"u1", "u2", "u99"}, Removed: []string{}, Chunks: 1, ResourceVersion: 2, Policy: pol}))
	for _, e := range evs {
		b, _ := events.Marshal(e)
		if _, err := js.Publish(ctx, e.Subject, b, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	cursor := regexp.MustCompile(`scimflow_identity_store_consumer_cursor_sequence\{consumer="identitystore-scim"[^}]*\} (\d+)`)
	natstest.WaitFor(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + pt.adminMetrics + "/metrics")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := cursor.FindSubmatch(b)
		if m == nil {
			return fmt.Errorf("no cursor metric")
		}
		if n, _ := strconv.Atoi(string(m[1])); n != len(evs) {
			return fmt.Errorf("cursor %d, want %d", n, len(evs))
		}
		return nil
	})
	live, fresh := stopAndReplay(t, p, dir, "identity-store")
	if live == "" || live != fresh {
		t.Errorf("live dump (%d bytes) != rebuilt dump (%d bytes)", len(live), len(fresh))
	}
}

// stopAndReplay stops serve, runs `scimflow replay <service>` over its data directory into a fresh
// file, and returns the canonical dumps of the live and the rebuilt file.
func stopAndReplay(t *testing.T, p *proc, dir, service string) (live, rebuilt string) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d: %s", code, p.stderr)
	}
	out := filepath.Join(t.TempDir(), "rebuilt.db")
	var stdout, errb bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+dir+"\n"), 0o600)
	if code := run([]string{"replay", service, "-config", cfg, "-out", out}, &stdout, &errb); code != 0 {
		t.Fatalf("replay %s = %d: %s", service, code, errb.String())
	}
	dump := func(file string) string {
		var b bytes.Buffer
		if code := run([]string{"replay", "dump", file}, &b, &errb); code != 0 {
			t.Fatalf("dump %s = %d: %s", file, code, errb.String())
		}
		return b.String()
	}
	return dump(filepath.Join(dir, service+".db")), dump(out)
}

// TestReplayRebuildsIdenticalSCIMResources: SCIM writes through scim-ingest's HTTP API (creates, a
// rename, a deactivation, a deletion, a group with members added and removed), then `scimflow replay
// scim-ingest` into a fresh file; the canonical dumps of the live and rebuilt files are equal.
func TestReplayRebuildsIdenticalSCIMResources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pt := newPorts(t)
	const token = "replay-test-admin-token-0123456789"
	env := append(servEnv(dir, pt), "SCIMFLOW_ADMIN_TOKEN="+token, "SCIMFLOW_SCIM_INGEST_BASE_URL=http://"+pt.scim)
	p := startProc(t, env, "serve", "-config", "/dev/null")
	waitReady(t, p, pt)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := &scenario.Admin{BaseURL: "http://" + pt.admin, Token: token}
	idp, err := admin.CreateIdP(ctx, scenario.IdPSpec{Name: "Okta", Type: "oidc",
		Config: scenario.OIDCConfig{ClientID: "c", ClientSecret: "s", Issuer: "https://idp.example.com",
			AuthURL: "https://idp.example.com/auth", TokenURL: "https://idp.example.com/token", CertsURL: "https://idp.example.com/keys"},
		SCIMConfig: scenario.SCIMConfig{Enabled: true, IdentityUpdateBehavior: "automatic", UserDeprovision: true, SeatDeprovision: true}})
	if err != nil {
		t.Fatal(err)
	}
	sc := &scenario.SCIM{BaseURL: idp.SCIMConfig.SCIMBaseURL, Secret: idp.SCIMConfig.Secret, Dialect: scenario.Okta}
	if err := sc.Ready(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	must := func(r scenario.Result, err error) {
		t.Helper()
		if err == nil {
			err = r.Err()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var users []*scenario.SCIMUser
	for i := range 6 {
		u := &scenario.SCIMUser{UserName: fmt.Sprintf("user%d@example.com", i), GivenName: "User", FamilyName: strconv.Itoa(i), ExternalID: fmt.Sprintf("ext-%d", i), Active: true}
		must(sc.CreateUser(ctx, u))
		users = append(users, u)
	}
	g := &scenario.SCIMGroup{DisplayName: "Engineering", ExternalID: "grp-eng"}
	must(sc.CreateGroup(ctx, g))
	must(sc.AddMembers(ctx, g, users[0], users[1], users[2], users[3]))
	must(sc.RemoveMembers(ctx, g, users[1]))
	must(sc.Rename(ctx, users[2], "Renamed", "User"))
	must(sc.SetActive(ctx, users[3], false))
	must(sc.DeleteUser(ctx, users[4]))

	// Everything scim-ingest committed is on the SCIM stream before serve stops.
	depth := regexp.MustCompile(`(?m)^scimflow_scim_ingest_outbox_(priority_)?depth\{[^}]*\} (\d+)`)
	natstest.WaitFor(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + pt.scimMetrics + "/metrics")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ms := depth.FindAllSubmatch(b, -1)
		if len(ms) != 2 {
			return fmt.Errorf("outbox depth metrics: %d found, want 2", len(ms))
		}
		for _, m := range ms {
			if string(m[2]) != "0" {
				return fmt.Errorf("outbox %sdepth %s", m[1], m[2])
			}
		}
		return nil
	})
	live, fresh := stopAndReplay(t, p, dir, "scim-ingest")
	for _, want := range []string{"user5@example.com", "Engineering", "Renamed"} {
		if !strings.Contains(live, hex.EncodeToString([]byte(want))) {
			t.Fatalf("live dump lacks %q: the writes were not stored", want)
		}
	}
	if live != fresh {
		t.Errorf("live dump (%d bytes) != rebuilt dump (%d bytes)\nlive:\n%s\nrebuilt:\n%s", len(live), len(fresh), live, fresh)
	}
}
