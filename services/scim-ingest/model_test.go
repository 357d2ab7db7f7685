package scimingest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// modelUser and modelGroup are the in-memory reference model.
type modelUser struct {
	UserName string
	Title    string
	Active   bool
}

type modelGroup struct {
	Name    string
	Members map[string]bool
}

type model struct {
	users  map[string]modelUser
	groups map[string]modelGroup
}

func (m *model) userByName(name string) (string, bool) {
	for id, u := range m.users {
		if strings.EqualFold(u.UserName, name) {
			return id, true
		}
	}
	return "", false
}

func (m *model) groupByName(name string) (string, bool) {
	for id, g := range m.groups {
		if strings.EqualFold(g.Name, name) {
			return id, true
		}
	}
	return "", false
}

// TestModel runs random sequences of create / put / patch / delete / membership operations over
// HTTP, checks every status against an in-memory model, and at the end compares the model with the
// store (read over HTTP) and with the state folded from the published events.
func TestModel(t *testing.T) {
	t.Parallel()
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			runModel(t, seed, 250)
		})
	}
}

func runModel(t *testing.T, seed uint64, steps int) {
	h := newHarness(t, noRateLimit)
	rng := rand.New(rand.NewPCG(seed, 42))
	m := &model{users: map[string]modelUser{}, groups: map[string]modelGroup{}}
	names := []string{"ann", "bob", "cid", "dee", "eve", "fay", "gus", "hal"}
	groupNames := []string{"red", "green", "blue"}
	pick := func(ids map[string]bool) string {
		if len(ids) == 0 || rng.IntN(5) == 0 {
			return "missing-" + fmt.Sprint(rng.IntN(3))
		}
		keys := slices.Sorted(maps.Keys(ids))
		return keys[rng.IntN(len(keys))]
	}
	userIDs := func() map[string]bool {
		out := map[string]bool{}
		for id := range m.users {
			out[id] = true
		}
		return out
	}
	groupIDs := func() map[string]bool {
		out := map[string]bool{}
		for id := range m.groups {
			out[id] = true
		}
		return out
	}
	var last resp
	check := func(op string, r resp, want int) {
		t.Helper()
		last = r
		if r.status != want {
			t.Fatalf("%s = %d %s, want %d", op, r.status, r.raw, want)
		}
	}
	for step := range steps {
		switch k := rng.IntN(10); k {
		case 0, 1: // create user
			name := names[rng.IntN(len(names))]
			if rng.IntN(2) == 0 {
				name = strings.ToUpper(name)
			}
			u := modelUser{UserName: name + "@x.test", Title: "t" + fmt.Sprint(rng.IntN(3)), Active: true}
			r := h.do("POST", "/Users", map[string]any{"schemas": []string{scimschema.User}, "userName": u.UserName, "title": u.Title})
			if _, dup := m.userByName(u.UserName); dup {
				check("create dup user", r, 409)
			} else {
				check("create user", r, 201)
				m.users[str(r.body["id"])] = u
			}
		case 2: // PUT user
			id := pick(userIDs())
			u, ok := m.users[id]
			if !ok {
				u.UserName = "ghost@x.test"
			}
			u.Title = "t" + fmt.Sprint(rng.IntN(3))
			u.Active = rng.IntN(3) > 0
			if rng.IntN(3) == 0 { // rename, possibly onto another user's name
				u.UserName = names[rng.IntN(len(names))] + "@X.test"
			}
			body := map[string]any{"schemas": []string{scimschema.User}, "userName": u.UserName, "title": u.Title, "active": u.Active}
			r := h.do("PUT", "/Users/"+id, body)
			other, taken := m.userByName(u.UserName)
			if _, ok := m.users[id]; !ok {
				check("put missing user", r, 404)
			} else if taken && other != id {
				check("rename onto a taken userName", r, 409)
			} else {
				check("put user", r, 200)
				m.users[id] = u
			}
		case 3: // PATCH user
			id := pick(userIDs())
			active := rng.IntN(2) == 0
			r := h.do("PATCH", "/Users/"+id, patchBody(map[string]any{"op": "Replace", "path": "active", "value": fmt.Sprint(active)}))
			if u, ok := m.users[id]; !ok {
				check("patch missing user", r, 404)
			} else {
				check("patch user", r, 200)
				u.Active = active
				m.users[id] = u
			}
		case 4: // DELETE user
			id := pick(userIDs())
			r := h.do("DELETE", "/Users/"+id, nil)
			if _, ok := m.users[id]; !ok {
				check("delete missing user", r, 404)
			} else {
				check("delete user", r, 204)
				delete(m.users, id)
				for _, g := range m.groups {
					delete(g.Members, id)
				}
			}
		case 5: // create group
			name := groupNames[rng.IntN(len(groupNames))]
			r := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": name})
			if _, dup := m.groupByName(name); dup {
				check("create dup group", r, 409)
			} else {
				check("create group", r, 201)
				m.groups[str(r.body["id"])] = modelGroup{Name: name, Members: map[string]bool{}}
			}
		case 6, 7: // membership
			gid := pick(groupIDs())
			uid := pick(userIDs())
			var body map[string]any
			op := rng.IntN(3)
			switch op {
			case 0:
				body = patchBody(map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": uid}}})
			case 1:
				body = patchBody(map[string]any{"op": "remove", "path": fmt.Sprintf("members[value eq %q]", uid)})
			case 2:
				body = patchBody(map[string]any{"op": "replace", "path": "members", "value": []any{map[string]any{"value": uid}}})
			}
			r := h.do("PATCH", "/Groups/"+gid, body)
			g, ok := m.groups[gid]
			_, userOK := m.users[uid]
			switch {
			case !ok:
				check("patch missing group", r, 404)
			case op != 1 && !userOK:
				check("add missing member", r, 400)
			default:
				check("patch members", r, 204)
				switch op {
				case 0:
					g.Members[uid] = true
				case 1:
					delete(g.Members, uid)
				case 2:
					g.Members = map[string]bool{uid: true}
					m.groups[gid] = g
				}
			}
		case 9: // rename group (Okta's path-less replace with the id inside)
			gid := pick(groupIDs())
			name := groupNames[rng.IntN(len(groupNames))] + "-" + fmt.Sprint(rng.IntN(2))
			r := h.do("PATCH", "/Groups/"+gid, patchBody(map[string]any{"op": "replace", "value": map[string]any{"id": gid, "displayName": name}}))
			g, ok := m.groups[gid]
			other, taken := m.groupByName(name)
			switch {
			case !ok:
				check("rename missing group", r, 404)
			case taken && other != gid:
				check("rename onto a taken group name", r, 409)
			default:
				check("rename group", r, 204)
				g.Name = name
				m.groups[gid] = g
			}
		case 8: // DELETE group
			gid := pick(groupIDs())
			r := h.do("DELETE", "/Groups/"+gid, nil)
			if _, ok := m.groups[gid]; !ok {
				check("delete missing group", r, 404)
			} else {
				check("delete group", r, 204)
				delete(m.groups, gid)
			}
		}
		_ = step
	}

	// The store, read over HTTP.
	gotUsers := map[string]modelUser{}
	lr := h.do("GET", "/Users?count=1000", nil)
	for _, res := range lr.body["Resources"].([]any) {
		u := res.(map[string]any)
		active, _ := u["active"].(bool)
		if u["active"] == nil {
			active = true
		}
		gotUsers[str(u["id"])] = modelUser{UserName: str(u["userName"]), Title: str(u["title"]), Active: active}
	}
	if diff := cmp.Diff(m.users, gotUsers); diff != "" {
		t.Errorf("users (-model +store):\n%s", diff)
	}
	gotGroups := map[string]modelGroup{}
	lr = h.do("GET", "/Groups?count=1000", nil)
	for _, res := range lr.body["Resources"].([]any) {
		g := res.(map[string]any)
		mg := modelGroup{Name: str(g["displayName"]), Members: map[string]bool{}}
		for _, mem := range g["members"].([]any) {
			mg.Members[str(mem.(map[string]any)["value"])] = true
		}
		gotGroups[str(g["id"])] = mg
	}
	if diff := cmp.Diff(m.groups, gotGroups); diff != "" {
		t.Errorf("groups (-model +store):\n%s", diff)
	}

	// The state folded from the events equals the model too: the events tell every change.
	h.eventsOf(last)
	evUsers := map[string]modelUser{}
	evGroups := map[string]modelGroup{}
	versions := map[string]int64{}
	for _, e := range h.allEvents() {
		switch p := e.Data.(type) {
		case events.SCIMUserUpserted:
			if p.ResourceVersion <= versions[p.UserID] {
				t.Errorf("user %s version %d after %d", p.UserID, p.ResourceVersion, versions[p.UserID])
			}
			versions[p.UserID] = p.ResourceVersion
			evUsers[p.UserID] = modelUser{UserName: p.UserName, Title: str(p.Attributes["title"]), Active: p.Active}
		case events.SCIMUserDeleted:
			delete(evUsers, p.UserID)
			for _, gid := range p.Groups {
				delete(evGroups[gid].Members, p.UserID)
			}
		case events.SCIMGroupUpserted:
			g, ok := evGroups[p.GroupID]
			if !ok {
				g.Members = map[string]bool{}
			}
			g.Name = p.DisplayName
			evGroups[p.GroupID] = g
		case events.SCIMGroupMembers:
			g := evGroups[p.GroupID]
			if p.Replace {
				g.Members = map[string]bool{}
			}
			for _, id := range p.Removed {
				delete(g.Members, id)
			}
			for _, id := range p.Added {
				g.Members[id] = true
			}
			evGroups[p.GroupID] = g
		case events.SCIMGroupDeleted:
			delete(evGroups, p.GroupID)
		}
	}
	if diff := cmp.Diff(m.users, evUsers); diff != "" {
		t.Errorf("users (-model +events):\n%s", diff)
	}
	if diff := cmp.Diff(m.groups, evGroups); diff != "" {
		t.Errorf("groups (-model +events):\n%s", diff)
	}
	_ = http.StatusOK
}
