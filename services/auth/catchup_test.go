package auth

import (
	"net/http"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/config"
)

// TestLoginGroupsFromSCIMGroups: with SCIM enabled, a login builds the session's groups from the
// identity's current SCIM groups, not its registry groups, which in reauth and no_action modes still
// hold what the previous login read (docs/design.md §4: at every login the identity is rebuilt from the
// latest SCIM state). Here the IdP removed Admins: the registry groups still say Admins, the SCIM
// groups do not, and neither the first /verify nor /test nor /get-identity of the new login has it.
func TestLoginGroupsFromSCIMGroups(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{idpMut: func(i *events.IdP) { i.SCIMConfig.Enabled = true }})
	at := h.clock.Now().Add(-time.Second)
	h.n.publish(t, events.New("idp-a", at, "corr", "", events.IdentityChanged{Identity: events.Identity{
		UserID: "registry-vic", Email: aliceEmail, Status: events.StatusActive, SeatHeld: true, SCIMUserID: "u1",
		Groups:     []events.Group{{ID: "ga", Name: "Admins"}, {ID: "ge", Name: "Eng"}},
		SCIMGroups: []events.Group{{ID: "ge", Name: "Eng"}},
	}, Changed: []string{"scim_groups"}}))

	// No wait for the snapshot: the login's catch-up barrier applies it first.
	b := newBrowser()
	tok := h.mustLogin(b, h.r, "idp-a")
	v := verify(t, h.r, tok, nil)
	if v.StatusCode != http.StatusOK || v.Header.Get(HeaderUserID) != "registry-vic" || v.Header.Get(HeaderGroups) != "Eng" {
		t.Errorf("first verify = %d user %q groups %q, want 200 registry-vic Eng (SCIM groups, not the registry's Admins)",
			v.StatusCode, v.Header.Get(HeaderUserID), v.Header.Get(HeaderGroups))
	}
	resp, body := b.get(t, h.r.url+"/get-identity")
	if resp.StatusCode != http.StatusOK || strings.Contains(body, "Admins") || !strings.Contains(body, `"Eng"`) {
		t.Errorf("GET /get-identity = %d %s, want Eng without Admins", resp.StatusCode, body)
	}
	// The IdP's "Test" button shows what a login would carry.
	tb := newBrowser()
	resp, _ = tb.get(t, h.r.url+"/test?idp_id=idp-a")
	resp, _ = tb.get(t, resp.Header.Get("Location"))
	resp, body = tb.get(t, resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusOK || strings.Contains(body, "Admins") || !strings.Contains(body, `"Eng"`) {
		t.Errorf("/test = %d %s, want groups [Eng]", resp.StatusCode, body)
	}
}

// TestLoginCatchUpBarrier: a login waits until this replica's IDENTITY projection has applied what
// the stream held when the callback began; if it cannot within login_catch_up_timeout, the login is
// refused with 503 (fail closed), counted, and no session is issued. Once the projection catches up,
// the same user logs in and the session reflects the event that was pending.
func TestLoginCatchUpBarrier(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{
		idpMut: func(i *events.IdP) { i.SCIMConfig.Enabled = true },
		cfg:    func(c *Config) { c.LoginCatchUpTimeout = config.Duration(300 * time.Millisecond) },
	})
	// Hold bbolt's write lock: the IDENTITY consumer cannot apply anything until release.
	locked, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- h.r.srv.db.Update(func(*bolt.Tx) error {
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	released := false
	releaseLock := func() {
		if !released {
			released = true
			close(release)
			if err := <-done; err != nil {
				t.Errorf("holding transaction: %v", err)
			}
		}
	}
	defer releaseLock()
	h.n.publish(t, identityEvent("idp-a", h.clock.Now().Add(-time.Second), events.Identity{UserID: "registry-ann", Email: aliceEmail,
		Status: events.StatusActive, SCIMGroups: []events.Group{{ID: "g1", Name: "Pending"}}}))

	b := newBrowser()
	start := time.Now()
	resp, body := h.login(b, h.r, "idp-a", "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"error_description":"identity_catching_up"`) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("login while the projection lags = %d %q (Retry-After %q), want 503 identity_catching_up with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refused login took %s, want about login_catch_up_timeout (300ms)", took)
	}
	if c := b.cookie(h.r.url, h.r.srv.sessionName); c != "" {
		t.Errorf("refused login set a session cookie")
	}
	if got := metricValue(t, h.r.reg, "scimflow_auth_login_catch_up_refused_total", map[string]string{"reason": "timeout"}); got != 1 {
		t.Errorf("scimflow_auth_login_catch_up_refused_total{reason=timeout} = %v, want 1", got)
	}

	releaseLock()
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	v := verify(t, h.r, tok, nil)
	if v.StatusCode != http.StatusOK || v.Header.Get(HeaderUserID) != "registry-ann" || v.Header.Get(HeaderGroups) != "Pending" {
		t.Errorf("verify after catch-up = %d user %q groups %q, want 200 registry-ann Pending", v.StatusCode, v.Header.Get(HeaderUserID), v.Header.Get(HeaderGroups))
	}
	if got := metricValue(t, h.r.reg, "scimflow_auth_login_catch_up_seconds", nil); got < 2 {
		t.Errorf("scimflow_auth_login_catch_up_seconds count = %v, want at least 2 (both callbacks)", got)
	}
}
