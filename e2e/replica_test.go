package e2e

import (
	"net/http"
	"syscall"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
	"github.com/scimflow/scimflow/testkit/proctest"
)

// TestSecondAuthReplica runs a second auth replica (`scimflow auth`, its own data dir and durable
// consumers) against serve's embedded NATS: a session minted by one replica is valid at the other
// (shared signing keys), and a SCIM deprovision revokes it at both (docs/design.md: "revokes sessions
// within milliseconds, on every replica"); a logout at one replica ends it at the other.
func TestSecondAuthReplica(t *testing.T) {
	t.Parallel()
	natsAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	op, secret, err := scenario.StartProvider()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	srv, err := newServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv.env = append(srv.env, "SCIMFLOW_NATS_LISTEN="+natsAddr, "SCIMFLOW_AUTH_REPLICA_ID=e2e-replica-1")
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.stop(syscall.SIGKILL) })
	e := &env{srv: srv, op: op, secret: secret, admin: srv.ep.AdminClient()}
	e.dumpOnFailure(t)

	// The second replica: same external URL (it is the same service behind a load balancer).
	auth2, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	r2 := &server{dataDir: t.TempDir(), stderr: &proctest.SyncBuffer{}, ep: srv.ep}
	r2.ep.Auth = "http://" + auth2
	r2.env = []string{
		"SCIMFLOW_DATA_DIR=" + r2.dataDir,
		"SCIMFLOW_NATS_URL=nats://" + natsAddr,
		"SCIMFLOW_AUTH_LISTEN=" + auth2,
		"SCIMFLOW_AUTH_EXTERNAL_URL=" + srv.ep.Auth,
		"SCIMFLOW_AUTH_REPLICA_ID=e2e-replica-2",
		"SCIMFLOW_LOG_LEVEL=warn",
	}
	if err := r2.startCmd("auth"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.stop(syscall.SIGKILL) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replica 2 output (tail):\n%s", tail(r2.stderr.String(), 4000))
		}
	})

	tn := newTenant(t, e, "replicas", scenario.Entra, "automatic", true, false)
	ctx := tn.ctx
	if err := scenario.NewBrowser(r2.ep.Auth, nil).WaitIdP(ctx, tn.idp.ID, waitTimeout); err != nil {
		t.Fatalf("replica 2 does not know the IdP: %v", err)
	}
	ann := tn.person("ann", "Ann", "Replica")
	bo := tn.person("bo", "Bo", "Replica")
	tn.must(tn.scim.CreateUser(ctx, ann.User))
	tn.must(tn.scim.CreateUser(ctx, bo.User))
	ba, bb := tn.login(ann), tn.login(bo) // at replica 1
	at2 := func(b *scenario.Browser) (int, error) {
		v, err := scenario.Verify(ctx, nil, r2.ep.Auth, b.Session(), "", scenario.Nginx, appURL)
		return v.Status, err
	}
	for _, b := range []*scenario.Browser{ba, bb} {
		tn.eventually("a replica-1 session is valid at replica 2", func() error {
			if s, err := at2(b); err != nil || s != http.StatusOK {
				return errorf("replica 2 /verify = %d %v", s, err)
			}
			return nil
		})
	}

	tn.must(tn.scim.SetActive(ctx, ann.User, false))
	tn.waitVerify("deprovision revokes at replica 1", ba, http.StatusUnauthorized)
	tn.eventually("deprovision revokes at replica 2", func() error {
		if s, err := at2(ba); err != nil || s != http.StatusUnauthorized {
			return errorf("replica 2 /verify = %d %v", s, err)
		}
		return nil
	})

	if err := bb.Logout(ctx); err != nil { // at replica 1
		t.Fatal(err)
	}
	tn.eventually("logout at replica 1 ends the session at replica 2", func() error {
		if s, err := at2(bb); err != nil || s != http.StatusUnauthorized {
			return errorf("replica 2 /verify = %d %v", s, err)
		}
		return nil
	})
}
