package auth

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/testkit/oidctest"
)

// publishApplied publishes e and waits until this replica's projection applied it.
func (h *harness) publishApplied(e events.Event) {
	h.t.Helper()
	h.n.publish(h.t, e)
	seq := h.n.lastSeq(h.t, events.StreamIdentity)
	waitFor(h.t, "identity event applied", 10*time.Second, func() error {
		if h.r.srv.identityRn.Cursor() < seq {
			return errNotYet
		}
		return nil
	})
}

func groupsOf(t *testing.T, r *replica, tok string) string {
	t.Helper()
	v := verify(t, r, tok, nil)
	if v.StatusCode != http.StatusOK {
		t.Fatalf("verify = %d, want 200", v.StatusCode)
	}
	return v.Header.Get(HeaderGroups)
}

// TestTokenGroupsWhenSCIMDoesNotKnowThePerson: with SCIM on, a person the SCIM app
// never provisioned logs in with the token's groups claim; once a SCIM resource links to them, even
// with no groups, SCIM membership replaces the claim; after SCIM deletes them the claim applies again.
func TestTokenGroupsWhenSCIMDoesNotKnowThePerson(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{idpMut: func(i *events.IdP) { i.SCIMConfig.Enabled = true }})
	uid := events.UserID("idp-a", aliceEmail)
	if g := groupsOf(t, h.r, h.mustLogin(newBrowser(), h.r, "idp-a")); g != "eng,ops" {
		t.Errorf("never provisioned: groups %q, want the claim eng,ops", g)
	}
	h.publishApplied(identityEvent("idp-a", h.clock.Now(), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive,
		SCIMUserID: "u1", SCIMLinked: true}))
	if g := groupsOf(t, h.r, h.mustLogin(newBrowser(), h.r, "idp-a")); g != "" {
		t.Errorf("linked by SCIM with no groups: groups %q, want none (SCIM replaces the claim)", g)
	}
	h.publishApplied(identityEvent("idp-a", h.clock.Now(), events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusInactive,
		SCIMUserID: "u1"}))
	if g := groupsOf(t, h.r, h.mustLogin(newBrowser(), h.r, "idp-a")); g != "eng,ops" {
		t.Errorf("deleted by SCIM: groups %q, want the claim eng,ops again", g)
	}
}

// TestSessionSnapshotPerMode: in automatic mode a registry change reaches a
// live session at its next /verify, in both directions (a group added, a group removed); in reauth,
// no_action and with SCIM off, a session keeps the identity it was issued with — neither a SCIM change
// nor another browser's fresh login (which rebuilds the registry identity) leaks into it — while
// the fresh session has the new groups.
func TestSessionSnapshotPerMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		scim    bool
		mode    string
		follows bool
	}{
		{"automatic", true, events.UpdateAutomatic, true},
		{"reauth", true, events.UpdateReauth, false},
		{"no_action", true, events.UpdateNoAction, false},
		{"scim_off", false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{idpMut: func(i *events.IdP) {
				i.SCIMConfig.Enabled, i.SCIMConfig.IdentityUpdateBehavior = tc.scim, tc.mode
			}})
			uid := events.UserID("idp-a", aliceEmail)
			// snapshot publishes the registry identity identity-store would: SCIM groups in SCIM
			// modes; with SCIM off the groups the latest login's claim carried.
			snapshot := func(groups ...string) {
				var gs []events.Group
				for _, g := range groups {
					gs = append(gs, events.Group{ID: g, Name: g})
				}
				id := events.Identity{UserID: uid, Email: aliceEmail, Status: events.StatusActive, Groups: gs}
				if tc.scim {
					id.SCIMUserID, id.SCIMLinked, id.SCIMGroups = "u1", true, gs
				}
				h.publishApplied(identityEvent("idp-a", h.clock.Now(), id))
			}
			first := "eng,ops"
			if tc.scim {
				snapshot("Eng")
				first = "Eng"
			}
			old := h.mustLogin(newBrowser(), h.r, "idp-a")
			if g := groupsOf(t, h.r, old); g != first {
				t.Fatalf("first session: groups %q, want %q", g, first)
			}

			// A group added.
			added := "Eng,Finance"
			if !tc.scim {
				added = "Finance,eng,ops"
				if err := h.op.AddUser(oidctest.User{Sub: alice, Email: aliceEmail, Name: "Alice", Groups: []string{"Finance", "eng", "ops"}}); err != nil {
					t.Fatal(err)
				}
				snapshot("Finance", "eng", "ops")
			} else {
				snapshot("Eng", "Finance")
			}
			want := first
			if tc.follows {
				want = added
			}
			if g := groupsOf(t, h.r, old); g != want {
				t.Errorf("after a group was added: old session's groups %q, want %q", g, want)
			}
			fresh := h.mustLogin(newBrowser(), h.r, "idp-a")
			if g := groupsOf(t, h.r, fresh); g != added {
				t.Errorf("fresh session after the addition: groups %q, want %q", g, added)
			}
			if g := groupsOf(t, h.r, old); g != want {
				t.Errorf("after another browser's login: old session's groups %q, want %q", g, want)
			}

			// A group removed.
			removed := "Finance"
			if !tc.scim {
				removed = "Finance,ops"
				if err := h.op.AddUser(oidctest.User{Sub: alice, Email: aliceEmail, Name: "Alice", Groups: []string{"Finance", "ops"}}); err != nil {
					t.Fatal(err)
				}
				snapshot("Finance", "ops")
			} else {
				snapshot("Finance")
			}
			if tc.follows {
				want = removed
			}
			if g := groupsOf(t, h.r, old); g != want {
				t.Errorf("after a group was removed: old session's groups %q, want %q", g, want)
			}
			if g := groupsOf(t, h.r, fresh); tc.follows && g != removed || !tc.follows && g != added {
				t.Errorf("after a group was removed: the second session's groups %q (follows the registry: %v)", g, tc.follows)
			}
			if g := groupsOf(t, h.r, h.mustLogin(newBrowser(), h.r, "idp-a")); g != removed {
				t.Errorf("fresh session after the removal: groups %q, want %q", g, removed)
			}
		})
	}
}

// lastSeq returns the last sequence of stream.
func (n *natsEnv) lastSeq(t testing.TB, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestLoginBarrierFailsClosed: for an IdP with SCIM enabled, a login whose
// read-your-writes barrier cannot complete — nobody answers on NATS, or scim-ingest does not answer
// within login_catch_up_timeout — is refused with 503 identity_catching_up and no session, counted
// by cause; an IdP with SCIM off is not held up.
func TestLoginBarrierFailsClosed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{
		idpMut: func(i *events.IdP) { i.SCIMConfig.Enabled = true },
		cfg: func(c *Config) {
			c.noSCIMBarrier = false
			c.LoginCatchUpTimeout = config.Duration(300 * time.Millisecond)
		},
	})
	b := newBrowser()
	resp, body := h.login(b, h.r, "idp-a", "")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "identity_catching_up") || b.cookie(h.r.url, h.r.srv.sessionName) != "" {
		t.Errorf("login with no barrier responder = %d %s, want 503 identity_catching_up without a session", resp.StatusCode, body)
	}
	if got := metricValue(t, h.r.reg, "scimflow_auth_login_catch_up_refused_total", map[string]string{"reason": "unavailable"}); got != 1 {
		t.Errorf("catch-up refusals (unavailable) = %v, want 1", got)
	}

	// A scim-ingest that never answers: the barrier times out.
	sub, err := h.n.nc.Subscribe(events.BarrierSCIMSubjects, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	h.n.nc.Flush()
	b = newBrowser()
	resp, body = b.do(t, http.MethodGet, h.authorize(b, h.r, "idp-a", ""), http.Header{"Accept": {"text/html"}})
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "identity_catching_up") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("login with a silent barrier responder = %d %s, want a 503 page with Retry-After", resp.StatusCode, body)
	}
	if got := metricValue(t, h.r.reg, "scimflow_auth_login_catch_up_refused_total", map[string]string{"reason": "timeout"}); got != 1 {
		t.Errorf("catch-up refusals (timeout) = %v, want 1", got)
	}

	// SCIM off: no barrier.
	off := newOP(t, h.clock, "idp-off", nil)
	h.n.putIdP(t, off.idp)
	waitFor(t, "idp-off registered", 10*time.Second, func() error {
		if _, ok := h.r.srv.idps.get("idp-off"); !ok {
			return errNotYet
		}
		return nil
	})
	h.mustLogin(newBrowser(), h.r, "idp-off")
}
