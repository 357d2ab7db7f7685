package identitystore

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
)

// TestIdPCacheOrder: the cache keeps the newest revision of each IdP whatever order its own writes
// and the watch's deliveries arrive in, and a deletion by this process is not undone by the watch's
// late copy of an older put.
func TestIdPCacheOrder(t *testing.T) {
	t.Parallel()
	c := newIdPCache()
	names := func() []string {
		all, ok := c.list()
		if !ok {
			t.Fatal("list before sync: ok = true, want false")
		}
		var out []string
		for _, p := range all {
			out = append(out, p.ID+"="+p.Name)
		}
		return out
	}
	if _, ok := c.list(); ok {
		t.Fatal("list before the watch synced: ok = true, want false (callers read the bucket)")
	}
	c.apply("a", &events.IdP{ID: "a", Name: "Zeta"}, 1)
	c.apply("b", &events.IdP{ID: "b", Name: "alpha"}, 2)
	c.markSynced()
	c.wrote(events.IdP{ID: "a", Name: "Zeta 2"}, 5)
	c.apply("a", &events.IdP{ID: "a", Name: "Zeta (late watch copy)"}, 4) // older than the write: ignored
	c.apply("a", &events.IdP{ID: "a", Name: "Zeta 2"}, 5)                 // the watch's copy of the write
	c.deleted("b", 2)
	c.apply("b", &events.IdP{ID: "b", Name: "alpha"}, 2) // late copy of the deleted entry: ignored
	c.apply("bad.id", &events.IdP{ID: "bad.id", Name: "never"}, 9)
	if diff := cmp.Diff([]string{"a=Zeta 2"}, names()); diff != "" {
		t.Errorf("cache after out-of-order updates (-want +got):\n%s", diff)
	}
	c.apply("b", nil, 6)                                      // the watch's deletion marker
	c.apply("b", &events.IdP{ID: "b", Name: "Beta again"}, 7) // created again later
	c.apply("a", nil, 8)                                      // deleted by another writer (or undecodable)
	if diff := cmp.Diff([]string{"b=Beta again"}, names()); diff != "" {
		t.Errorf("cache after re-creation and deletion (-want +got):\n%s", diff)
	}
}

// TestOverviewFollowsIdPConfig: the overview (and the admin API's list behind it) is served from the
// watched copy of idp_config, and shows an IdP created, changed and deleted through the admin API at
// once, and one changed or deleted in the bucket by another writer once the watch delivers it.
func TestOverviewFollowsIdPConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	eventually(t, "idp_config watch synced", func() bool { _, ok := s.idpc.list(); return ok })
	a := newAPI(t, s)
	b := newBrowser(t, "http://"+h.addr)
	b.signIn(testToken)
	overview := func() string {
		t.Helper()
		res, page := b.do("GET", "/ui/", nil)
		if res.StatusCode != 200 {
			t.Fatalf("overview = %d:\n%s", res.StatusCode, page)
		}
		return page
	}
	row := func(id, name string) string { return `<a href="/ui/idps/` + id + `">` + name + `</a>` }

	var created idpView
	a.call("POST", "/api/v1/identity_providers", validIdP("Okta Cache"), 201, &created)
	if page := overview(); !strings.Contains(page, row(created.ID, "Okta Cache")) {
		t.Fatalf("overview right after the create lacks the IdP:\n%s", page)
	}
	upd := validIdP("Okta Renamed")
	a.call("PUT", "/api/v1/identity_providers/"+created.ID, upd, 200, nil)
	if page := overview(); !strings.Contains(page, row(created.ID, "Okta Renamed")) || strings.Contains(page, "Okta Cache") {
		t.Fatalf("overview right after the rename does not show the new name only:\n%s", page)
	}

	// Another writer (a second identity-store, an operator) changes the bucket directly.
	ctx := context.Background()
	kv, err := s.kv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := h.kvIdP(created.ID)
	p.Name = "Okta Elsewhere"
	raw, _ := json.Marshal(p)
	if _, err := kv.Put(ctx, created.ID, raw); err != nil {
		t.Fatal(err)
	}
	eventually(t, "overview shows the name written elsewhere", func() bool { return strings.Contains(overview(), row(created.ID, "Okta Elsewhere")) })
	other := events.IdP{ID: "other-writer", Name: "Written Elsewhere", Type: "oidc"}
	raw, _ = json.Marshal(other)
	if _, err := kv.Put(ctx, other.ID, raw); err != nil {
		t.Fatal(err)
	}
	eventually(t, "overview shows the IdP created elsewhere", func() bool { return strings.Contains(overview(), row(other.ID, "Written Elsewhere")) })
	if err := kv.Delete(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "overview drops the IdP deleted elsewhere", func() bool { return !strings.Contains(overview(), "Written Elsewhere") })

	a.call("DELETE", "/api/v1/identity_providers/"+created.ID, nil, 200, nil)
	if page := overview(); strings.Contains(page, "Okta Elsewhere") || !strings.Contains(page, "No identity provider yet") {
		t.Errorf("overview right after the deletion still shows the IdP:\n%s", page)
	}
}
