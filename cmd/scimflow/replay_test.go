package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
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
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("serve exit %d: %s", code, p.stderr)
	}

	rebuilt := filepath.Join(t.TempDir(), "rebuilt.db")
	var out, errb bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("data_dir: "+dir+"\n"), 0o600)
	if code := run([]string{"replay", "identity-store", "-config", cfg, "-out", rebuilt}, &out, &errb); code != 0 {
		t.Fatalf("replay = %d: %s", code, errb.String())
	}
	var live, fresh bytes.Buffer
	if code := run([]string{"replay", "dump", filepath.Join(dir, "identity-store.db")}, &live, &errb); code != 0 {
		t.Fatalf("dump live = %d: %s", code, errb.String())
	}
	if code := run([]string{"replay", "dump", rebuilt}, &fresh, &errb); code != 0 {
		t.Fatalf("dump rebuilt = %d: %s", code, errb.String())
	}
	if live.Len() == 0 || live.String() != fresh.String() {
		t.Errorf("live dump (%d bytes) != rebuilt dump (%d bytes)", live.Len(), fresh.Len())
	}
}
