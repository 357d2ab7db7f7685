package identitystore

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/testkit/oidctest"
)

// discoveryIdP is an IdP body using discovery at issuer.
func discoveryIdP(name, issuer string) map[string]any {
	b := validIdP(name)
	b["config"] = map[string]any{"client_id": "cid", "client_secret": "csecret", "issuer": issuer, "pkce_enabled": true}
	return b
}

// TestIdPCheckedWhenSaved: an IdP whose provider advertises only EdDSA, or whose key
// set has no key scimflow can use, is refused with 400 naming the reason, on create and on update; an
// unreachable provider is saved with a warning in messages; a working one is saved without.
func TestIdPCheckedWhenSaved(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := newAPI(t, h.start())
	op, err := oidctest.Start(oidctest.Options{ClientID: "cid", ClientSecret: "csecret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })

	var created idpView
	r := a.call("POST", "/api/v1/identity_providers", discoveryIdP("works", op.Issuer()), 201, &created)
	if msgs := r.Messages; len(msgs) != 0 {
		t.Errorf("create of a working IdP: messages = %v, want none", msgs)
	}

	op.SetFlow(oidctest.Flow{DiscoveryAlgs: []string{"EdDSA"}})
	r = a.call("POST", "/api/v1/identity_providers", discoveryIdP("eddsa", op.Issuer()), 400, nil)
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "EdDSA") || !strings.HasPrefix(r.Errors[0].Message, "config.issuer:") {
		t.Errorf("create with EdDSA-only discovery: errors = %v, want one naming config.issuer and EdDSA", r.Errors)
	}
	// The same check on update; the stored IdP is unchanged.
	upd := discoveryIdP("works renamed", op.Issuer())
	r = a.call("PUT", "/api/v1/identity_providers/"+created.ID, upd, 400, nil)
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "EdDSA") {
		t.Errorf("update with EdDSA-only discovery: errors = %v", r.Errors)
	}
	if got := h.kvIdP(created.ID); got.Name != "works" {
		t.Errorf("refused update changed the stored IdP: name %q", got.Name)
	}

	// A manual key set URL that answers 404: refused.
	op.SetFlow(oidctest.Flow{})
	manual := validIdP("manual no key")
	manual["config"].(map[string]any)["certs_url"] = op.Issuer() + "/nowhere"
	a.call("POST", "/api/v1/identity_providers", manual, 400, nil)

	// Unreachable: saved, with a warning.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	r = a.call("POST", "/api/v1/identity_providers", discoveryIdP("down", dead), 201, nil)
	if msgs := r.Messages; len(msgs) != 1 || !strings.Contains(msgs[0], "not checked") {
		t.Errorf("create of an unreachable IdP: messages = %v, want one warning", msgs)
	}
}

// TestPutAcceptsGetResult: a GET result sent back unchanged with PUT succeeds;
// read-only fields (secret_set, secret_rotated_at, scim_base_url, created_at, updated_at, id) are
// ignored, and the stored secrets are kept.
func TestPutAcceptsGetResult(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a := newAPI(t, h.start())
	var created idpView
	a.call("POST", "/api/v1/identity_providers", validIdP("Echo"), 201, &created)
	a.call("POST", "/api/v1/identity_providers/"+created.ID+"/refresh_scim_secret", nil, 200, nil)
	before := h.kvIdP(created.ID)
	r := a.call("GET", "/api/v1/identity_providers/"+created.ID, nil, 200, nil)
	var echoed map[string]any
	if err := json.Unmarshal(r.Result, &echoed); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"created_at", "updated_at", "id"} {
		if _, ok := echoed[f]; !ok {
			t.Fatalf("GET result lacks %s: %v", f, echoed)
		}
	}
	sc := echoed["scim_config"].(map[string]any)
	for _, f := range []string{"secret_set", "secret_rotated_at", "scim_base_url"} {
		if _, ok := sc[f]; !ok {
			t.Fatalf("GET scim_config lacks %s: %v", f, sc)
		}
	}
	echoed["created_at"] = "2001-01-01T00:00:00Z" // read-only: ignored, not an error
	a.call("PUT", "/api/v1/identity_providers/"+created.ID, echoed, 200, nil)
	after := h.kvIdP(created.ID)
	if after.CreatedAt != before.CreatedAt || after.Config.ClientSecret != "csecret" || after.SCIMConfig.SecretSHA256 != before.SCIMConfig.SecretSHA256 ||
		after.SCIMConfig.PreviousSecretSHA256 != before.SCIMConfig.PreviousSecretSHA256 {
		t.Errorf("after echoing GET with PUT: stored = %+v, want created_at and secrets kept (before %+v)", after, before)
	}
}
