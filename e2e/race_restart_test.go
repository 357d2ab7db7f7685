package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"

	"github.com/scimflow/scimflow/internal/scenario"
)

// TestLoginRacesDeprovision runs logins whose callback races the SCIM deactivation of the same
// person (half concurrently, half with the callback right after the SCIM response). Whichever wins,
// the session must end up rejected, the person locked out and, with seat_deprovision, without a
// seat (R3: the lock is read at the callback, and a session is valid only while its user is not
// locked).
func TestLoginRacesDeprovision(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "race", scenario.Entra, "automatic", true, true)
	ctx := tn.ctx
	const n = 8
	var wg sync.WaitGroup
	people := make([]*scenario.Person, n)
	browsers := make([]*scenario.Browser, n)
	results := make([]scenario.LoginResult, n)
	errs := make([]error, 2*n)
	for i := range people {
		people[i] = tn.person(fmt.Sprintf("racer%d", i), "Racer", fmt.Sprint(i))
		tn.must(tn.scim.CreateUser(ctx, people[i].User))
		browsers[i] = tn.browser()
		cb, err := browsers[i].StartLogin(ctx, tn.idp.ID, people[i].Sub)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			// The deprovision is acknowledged (durable) first; the callback follows at once, before
			// auth has necessarily heard of the lock.
			_, errs[2*i+1] = tn.scim.SetActive(ctx, people[i].User, false)
			results[i], errs[2*i] = browsers[i].FinishLogin(ctx, cb)
			continue
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			results[i], errs[2*i] = browsers[i].FinishLogin(ctx, cb)
		}()
		go func() {
			defer wg.Done()
			_, errs[2*i+1] = tn.scim.SetActive(ctx, people[i].User, false)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	won := 0
	for i, p := range people {
		if results[i].OK() {
			won++
			tn.waitVerify(p.User.UserName+": session from a login racing the deprovision", browsers[i], http.StatusUnauthorized)
			if _, status, _ := browsers[i].GetIdentity(ctx); status != http.StatusUnauthorized {
				t.Errorf("%s: /get-identity = %d after the deprovision, want 401", p.User.UserName, status)
			}
		} else if results[i].Status != http.StatusForbidden {
			t.Errorf("%s: racing callback = %d %s, want a session or 403", p.User.UserName, results[i].Status, results[i].Body)
		}
		tn.user(p.User.UserName+" locked", p.User.UserName, func(u scenario.User) error {
			if !u.Locked || u.Status != "inactive" || len(u.ActiveSessions) != 0 || u.SeatHeld {
				return fmt.Errorf("locked %v status %s sessions %d seat %v, want locked, inactive, no sessions, no seat", u.Locked, u.Status, len(u.ActiveSessions), u.SeatHeld)
			}
			return nil
		})
	}
	t.Logf("%d of %d racing logins got a session (auth had not yet heard of the lock); all were revoked", won, n)
}

// TestRestart stops scimflow with SIGTERM right after a SCIM deactivation was acknowledged and
// starts it again on the same data dir: the IdP, its secret, the registry, sessions, revocations,
// the provisioning log and the in-flight deactivation all survive, and the pipeline keeps working.
// Then the same with SIGKILL (a crash): a 2xx to the IdP means the change is on disk.
func TestRestart(t *testing.T) {
	t.Parallel()
	e := ownEnv(t)
	e.dumpOnFailure(t)
	tn := newTenant(t, e, "restart", scenario.Entra, "automatic", true, true)
	ctx := tn.ctx
	alice := tn.person("alice", "Alice", "Smith")
	bob := tn.person("bob", "Bob", "Jones")
	carol := tn.person("carol", "Carol", "White")
	eng := &scenario.SCIMGroup{DisplayName: "Engineering"}
	tn.must(tn.scim.CreateGroup(ctx, eng))
	for _, p := range []*scenario.Person{alice, bob, carol} {
		tn.must(tn.scim.CreateUser(ctx, p.User))
	}
	tn.must(tn.scim.AddMembers(ctx, eng, alice.User, bob.User, carol.User))
	tn.user("carol in Engineering", carol.User.UserName, func(u scenario.User) error {
		return groupsAre(u.Identity.GroupNames(), "Engineering")
	})
	ba, bb, bc := tn.login(alice), tn.login(bob), tn.loginWithGroups(carol, "Engineering")
	for _, b := range []*scenario.Browser{ba, bb, bc} {
		tn.waitVerify("session before restart", b, http.StatusOK)
	}
	resBob := tn.must(tn.scim.SetActive(ctx, bob.User, false))
	tn.waitVerify("bob revoked before restart", bb, http.StatusUnauthorized)
	// A logged-out session stays logged out across restarts.
	bo := tn.login(carol)
	loggedOut := bo.Session()
	if err := bo.Logout(ctx); err != nil {
		t.Fatal(err)
	}

	// The IdP got a 2xx, so the change is on disk; stop at once, before it is necessarily applied.
	resAlice := tn.must(tn.scim.SetActive(ctx, alice.User, false))
	if code := e.srv.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("scimflow exited with %d on SIGTERM, want 0", code)
	}
	if err := e.srv.start(); err != nil {
		t.Fatalf("restart on the same data dir: %v", err)
	}

	if _, err := e.admin.GetIdP(ctx, tn.idp.ID); err != nil {
		t.Fatalf("IdP after restart: %v", err)
	}
	if r, err := tn.scim.Do(ctx, http.MethodGet, "/Users/"+alice.User.ID, nil); err != nil || r.Status != http.StatusOK {
		t.Fatalf("SCIM GET with the old secret after restart = %d %v, want 200", r.Status, err)
	}
	tn.waitVerify("alice's deactivation, acknowledged before the restart, revokes her session", ba, http.StatusUnauthorized)
	tn.user("alice locked without a seat", alice.User.UserName, func(u scenario.User) error {
		if !u.Locked || u.SeatHeld || u.Status != "inactive" {
			return fmt.Errorf("locked %v seat %v status %s, want locked, no seat, inactive", u.Locked, u.SeatHeld, u.Status)
		}
		return nil
	})
	tn.wantVerify("bob stays revoked", bb, http.StatusUnauthorized)
	tn.wantVerify("carol's session survives the restart", bc, http.StatusOK)
	if v, err := scenario.Verify(ctx, nil, e.srv.ep.Auth, loggedOut, "", scenario.Nginx, appURL); err != nil || v.Status != http.StatusUnauthorized {
		t.Errorf("a session logged out before the restart = %d %v, want 401", v.Status, err)
	}
	v := tn.verify(bc)
	if v.Header.Get("X-Scimflow-Groups") != "Engineering" {
		t.Errorf("carol's groups after restart = %q, want Engineering", v.Header.Get("X-Scimflow-Groups"))
	}
	tn.history(bob.User.UserName, resBob.RequestID)
	tn.history(alice.User.UserName, resAlice.RequestID)
	tn.logRow(resBob.RequestID)
	tn.logRow(resAlice.RequestID)
	rows, err := e.admin.SCIMLogs(ctx, url.Values{"idp_id": {tn.idp.ID}, "limit": {"1000"}})
	if err != nil || len(rows) < 9 {
		t.Errorf("SCIM log after restart: %d rows, %v; want every request (≥ 9)", len(rows), err)
	}

	// The pipeline keeps working: reactivation and a fresh login.
	tn.must(tn.scim.SetActive(ctx, alice.User, true))
	b := tn.loginEventually(alice)
	tn.waitVerify("login after restart and reactivation", b, http.StatusOK)
	tn.wantVerify("pre-lock session stays invalid", ba, http.StatusUnauthorized)

	// A crash (SIGKILL) right after an acknowledged deactivation loses nothing either.
	resCarol := tn.must(tn.scim.SetActive(ctx, carol.User, false))
	e.srv.stop(syscall.SIGKILL)
	if err := e.srv.start(); err != nil {
		t.Fatalf("start after SIGKILL: %v", err)
	}
	tn.waitVerify("carol's deactivation, acknowledged before the crash, revokes her session", bc, http.StatusUnauthorized)
	tn.history(carol.User.UserName, resCarol.RequestID)
	tn.logRow(resCarol.RequestID)
	tn.wantVerify("alice's new session survives the crash", b, http.StatusOK)
}
