//go:build e2e_known_bugs

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/scenario"
)

// This file holds end-to-end tests that fail because of known service bugs. Each documents its bug
// and is kept out of the default suite; run them with `go test -tags e2e_known_bugs ./e2e/`.

// TestEntraUnchangedPatchKeepsVersion: Entra's create carries `"roles": []` (scim-idp-requests.md
// §1.2). scim-ingest stores it as `"roles": null` and returns that null in GET, which Entra's guidance
// forbids ("no nulls": the validator and Test Connection choke on them). When this was found, the
// next PATCH, even one that changed nothing, also dropped it: the version went from W/"1" to W/"2"
// and an upserted event with changed ["roles"] was published (docs/scim.md: "A PUT or PATCH that
// changes nothing ... keeps the version and publishes no resource event"); downstream the history
// of an Entra deactivation read "SCIM attributes applied (automatic): active,roles". At the last
// run the version is kept; the null in GET remains.
// Expected: no null in the resource; the unchanged PATCH keeps W/"1".
func TestEntraUnchangedPatchKeepsVersion(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	tn := newTenant(t, e, "nullroles", scenario.Entra, "automatic", false, false)
	p := tn.person("pat", "Pat", "Lee")
	tn.must(tn.scim.CreateUser(tn.ctx, p.User))
	get := func() (string, string) {
		r, err := tn.scim.Do(tn.ctx, http.MethodGet, "/Users/"+p.User.ID, nil)
		if err != nil || r.Status != http.StatusOK {
			t.Fatalf("GET user = %d %v", r.Status, err)
		}
		var v struct {
			Meta struct {
				Version string `json:"version"`
			} `json:"meta"`
		}
		json.Unmarshal(r.Body, &v)
		return v.Meta.Version, string(r.Body)
	}
	v1, body := get()
	if strings.Contains(body, "null") {
		t.Errorf("GET after Entra's create has a null attribute: %s", body)
	}
	tn.must(tn.scim.Rename(tn.ctx, p.User, p.User.GivenName, p.User.FamilyName)) // the same values again
	if v2, body := get(); v2 != v1 {
		t.Errorf("version after an unchanged PATCH = %s, want %s (unchanged); resource now %s", v2, v1, body)
	}
}

// TestAutomaticGroupChangeReachesRacingLogin: in automatic mode "registry groups updated now"
// (DESIGN.md §4) must reach every session. It does not reach a session whose login happened after
// the SCIM change was acknowledged but before auth heard of it (under 150 SCIM writes/s of other
// IdPs, that window is tens of milliseconds):
//
//   - removal: the IdP removes the user from G; the registry and the user's older session drop G, but
//     the session of a login made right after the removal keeps G — X-Scimflow-Groups: G and an app
//     token saying so — and keeps it (by the mechanism below, for its whole lifetime, session_ttl
//     24h). A removed group is a privilege kept.
//
//   - addition: a user provisioned and added to G who logs in at once never gets G in that session,
//     though the registry lists it.
//
//   - reauth: the same removal revokes the older session, but the racing login's session was issued
//     after the revocation's time (the SCIM event's), so it is not revoked, and it keeps Admins
//     unless identity-store happened to apply the removal before that login.
//
// Mechanism (services/auth/verify.go identityOf): the session uses the registry snapshot only when
// the snapshot's time is not before the session's issue time; the snapshot of a SCIM change carries
// the SCIM event's time, which is earlier than a login that raced it, so it is ignored; and
// identity-store's processing of that login publishes nothing new when the rebuilt identity equals
// the registry's. Expected: both sessions converge on the registry's groups.
func TestAutomaticGroupChangeReachesRacingLogin(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	stop := startNoise(t, e, 4, 20, 150)
	defer stop()
	tn := newTenant(t, e, "racinglogin", scenario.Okta, "automatic", true, false)
	ctx := tn.ctx

	t.Run("removal", func(t *testing.T) {
		tn := *tn
		tn.t = t
		p := tn.person("rem", "Rem", "Oval")
		tn.must(tn.scim.CreateUser(ctx, p.User))
		g := &scenario.SCIMGroup{DisplayName: "Admins"}
		tn.must(tn.scim.CreateGroup(ctx, g))
		tn.must(tn.scim.AddMembers(ctx, g, p.User))
		var b1 *scenario.Browser
		tn.eventually("a session in Admins", func() error {
			b1 = tn.login(p)
			return groupsAre(headerGroups(tn.verify(b1)), "Admins")
		})
		tn.must(tn.scim.RemoveMembers(ctx, g, p.User))
		b2 := tn.login(p) // right after the IdP's removal was acknowledged
		tn.eventually("the older session drops Admins", func() error { return groupsAre(headerGroups(tn.verify(b1))) })
		tn.user("the registry has no Admins", p.User.UserName, func(u scenario.User) error { return groupsAre(u.Identity.GroupNames()) })
		if err := scenario.Eventually(ctx, 5*time.Second, func() error { return groupsAre(headerGroups(tn.verify(b2))) }); err != nil {
			t.Errorf("session of a login right after the removal: %v (the IdP removed Admins; the registry and the older session agree)", err)
		}
	})
	t.Run("reauth removal", func(t *testing.T) {
		tn := newTenant(t, e, "racingreauth", scenario.Okta, "reauth", true, false)
		p := tn.person("rea", "Rea", "Uth")
		tn.must(tn.scim.CreateUser(ctx, p.User))
		g := &scenario.SCIMGroup{DisplayName: "Admins"}
		tn.must(tn.scim.CreateGroup(ctx, g))
		tn.logRow(tn.must(tn.scim.AddMembers(ctx, g, p.User)).RequestID)
		var b1 *scenario.Browser
		tn.eventually("a session in Admins", func() error {
			b1 = tn.login(p)
			return groupsAre(headerGroups(tn.verify(b1)), "Admins")
		})
		tn.must(tn.scim.RemoveMembers(ctx, g, p.User))
		b2 := tn.login(p) // right after the IdP's removal was acknowledged
		tn.waitVerify("reauth revokes the older session", b1, http.StatusUnauthorized)
		err := scenario.Eventually(ctx, 5*time.Second, func() error {
			v := tn.verify(b2)
			if v.Status == http.StatusUnauthorized {
				return nil // revoked: acceptable
			}
			return groupsAre(headerGroups(v))
		})
		if err != nil {
			t.Errorf("reauth: session of a login right after the removal, neither revoked nor without Admins: %v", err)
		}
	})
	t.Run("addition", func(t *testing.T) {
		tn := *tn
		tn.t = t
		p := tn.person("add", "Add", "Ition")
		tn.must(tn.scim.CreateUser(ctx, p.User))
		g := &scenario.SCIMGroup{DisplayName: "Readers"}
		tn.must(tn.scim.CreateGroup(ctx, g))
		tn.must(tn.scim.AddMembers(ctx, g, p.User))
		b := tn.login(p) // right after the IdP's addition was acknowledged
		tn.user("the registry has Readers", p.User.UserName, func(u scenario.User) error { return groupsAre(u.Identity.GroupNames(), "Readers") })
		if err := scenario.Eventually(ctx, 5*time.Second, func() error { return groupsAre(headerGroups(tn.verify(b)), "Readers") }); err != nil {
			t.Errorf("session of a login right after the addition: %v (the registry lists Readers)", err)
		}
	})
}

// TestReauthRevokesWhenLoginAppliedLate: reauth, "group membership: all sessions revoked" (DESIGN.md
// §4). The user logs in (the session works), then the IdP removes them from Admins. identity-store
// consumes the SCIM and AUTH streams independently; when its AUTH consumer lags (here: a burst of
// other people's logins; on a busy machine it happens by itself), it applies the removal before the
// login event and sees a user who never logged in: the history entry of the removal reads
// "membership ... changed (reauth): groups read at next login", with status provisioned and no
// revocation. The login applied next does not look back, so the session issued before the removal
// is never revoked: /verify keeps answering 200 (at the last run its X-Scimflow-Groups already showed
// the removal, so the harm is a session reauth should have ended, and a /get-identity whose groups
// no login read). Reproduced in 2 of 5 rounds per run here, and by itself on a busy machine
// (TestNextLoginReadsCurrentGroups/reauth then fails at "reauth revokes"). Expected: 401, whatever
// the order in which identity-store applies the two streams (e.g. revoke on every reauth membership
// change, stamped with the change's time).
func TestReauthRevokesWhenLoginAppliedLate(t *testing.T) {
	t.Parallel()
	e := ownEnv(t)
	noise := newTenant(t, e, "loginnoise", scenario.Okta, "automatic", false, false)
	var others []*scenario.Person
	for i := range 40 {
		others = append(others, noise.person(fmt.Sprint("o", i), "O", fmt.Sprint(i)))
	}
	tn := newTenant(t, e, "latelogin-reauth", scenario.Okta, "reauth", true, false)
	ctx := tn.ctx
	failed := 0
	const rounds = 5
	for round := range rounds {
		p := tn.person(fmt.Sprint("vic", round), "Vic", fmt.Sprint(round))
		tn.must(tn.scim.CreateUser(ctx, p.User))
		g := &scenario.SCIMGroup{DisplayName: fmt.Sprint("Admins", round)}
		tn.must(tn.scim.CreateGroup(ctx, g))
		tn.logRow(tn.must(tn.scim.AddMembers(ctx, g, p.User)).RequestID)
		// A burst of other logins queues AUTH events ahead of this one.
		var wg sync.WaitGroup
		for _, o := range others {
			wg.Add(1)
			go func() { defer wg.Done(); noise.browser().Login(ctx, noise.idp.ID, o.Sub) }()
		}
		b := tn.login(p)
		tn.eventually("session in the group", func() error { return groupsAre(headerGroups(tn.verify(b)), g.DisplayName) })
		res := tn.must(tn.scim.RemoveMembers(ctx, g, p.User))
		wg.Wait()
		tn.logRow(res.RequestID)
		if err := scenario.Eventually(ctx, 5*time.Second, func() error {
			if v := tn.verify(b); v.Status != http.StatusUnauthorized {
				return fmt.Errorf("/verify = %d groups %q", v.Status, v.Header.Get("X-Scimflow-Groups"))
			}
			return nil
		}); err != nil {
			failed++
			t.Errorf("round %d: the session from before the removal is not revoked: %v\n%s", round, err, describeUser(tn.user("registry", p.User.UserName, nil)))
		}
	}
	t.Logf("%d of %d rounds left the session valid", failed, rounds)
}
