package auth

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/broker"
)

// TestUndecodableIdPEntryDisablesIdP: an idp_config entry that does not decode disables the IdP in
// auth as in every service (internal/idpwatch) — logins answer unknown_idp — instead of keeping the
// previous version; saving it again restores it.
func TestUndecodableIdPEntryDisablesIdP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	login := func() int {
		c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(h.r.url + "/login?idp_id=" + h.op.idp.ID)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := login(); got != http.StatusFound {
		t.Fatalf("/login before = %d, want 302", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := h.n.js.KeyValue(ctx, broker.KVIdPConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, h.op.idp.ID, []byte(`{"name":`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "IdP disabled", 10*time.Second, func() error {
		if got := login(); got != http.StatusNotFound {
			return fmt.Errorf("/login = %d, want 404 unknown_idp", got)
		}
		return nil
	})
	h.n.putIdP(t, h.op.idp)
	waitFor(t, "IdP restored", 10*time.Second, func() error {
		if got := login(); got != http.StatusFound {
			return fmt.Errorf("/login = %d, want 302", got)
		}
		return nil
	})
}
