package identitystore

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scimflow/scimflow/events"
)

var (
	update = flag.Bool("update", false, "rewrite the golden registry dumps under testdata/streams")
	record = flag.Bool("record", false, "re-record the event streams under testdata/streams (new event ids; implies -update)")
)

// recordings are the recorded streams: each builds a scenario with a generator.
var recordings = map[string]func(g *gen) []events.Event{
	"okta-automatic": recOktaAutomatic,
	"entra-reauth":   recEntraReauth,
	"admin-noaction": recAdminNoAction,
}

func logEv(g *gen, method, typ, id, email, group, status string, code int) events.Event {
	l := events.SCIMLog{RequestID: "req", Method: method, Path: "/" + strings.ToLower(typ) + "s", ResourceType: typ, ResourceID: id,
		ResourceUserEmail: email, ResourceGroupName: group, Status: status, HTTPStatus: code, RequestBody: []byte(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}`)}
	if status == events.LogError {
		l.ErrorDescription = "uniqueness: userName already exists"
	}
	return g.ev(l)
}

func recOktaAutomatic(g *gen) []events.Event {
	p := pol(events.UpdateAutomatic, true, true)
	grp := func(id, name string, v int64) events.Event {
		return g.ev(events.SCIMGroupUpserted{GroupID: id, DisplayName: name, Created: v == 1, ResourceVersion: v, Policy: p})
	}
	mem := func(gid, name string, add, rm []string, v int64) events.Event {
		m := events.Chunk(gid, name, false, add, rm, v)[0]
		m.Policy = p
		return g.ev(m)
	}
	var out []events.Event
	out = append(out, grp("g-eng", "Engineering", 1), grp("g-ops", "Ops", 1))
	out = append(out, g.ev(scimUser("ou1", "alice@corp.example", "Alice", true, 1, p)), logEv(g, "POST", "USER", "ou1", "alice@corp.example", "", events.LogSuccess, 201))
	out = append(out, g.ev(scimUser("ou2", "bob@corp.example", "Bob", true, 1, p)), logEv(g, "POST", "USER", "ou2", "bob@corp.example", "", events.LogSuccess, 201))
	out = append(out, logEv(g, "POST", "USER", "", "bob@corp.example", "", events.LogError, 409))
	out = append(out, mem("g-eng", "Engineering", []string{"ou1", "ou2"}, nil, 2), logEv(g, "PATCH", "GROUP", "g-eng", "", "Engineering", events.LogSuccess, 204))
	out = append(out, g.login("alice@corp.example", "Alice A", "sa1", true), g.login("bob@corp.example", "Bob B", "sb1", true))
	out = append(out, mem("g-ops", "Ops", []string{"ou1"}, nil, 2), grp("g-eng", "Eng", 3))
	u := scimUser("ou1", "alice@corp.example", "Alice Anders", true, 2, p)
	u.Changed = []string{"displayName"}
	out = append(out, g.ev(u))
	out = append(out, g.ev(events.LoggedOut{UserID: events.UserID(g.idp, "alice@corp.example"), Email: "alice@corp.example", SessionIDHash: "sa1"}))
	d := scimUser("ou2", "bob@corp.example", "Bob", false, 2, p)
	d.Changed = []string{"active"}
	out = append(out, g.ev(d), logEv(g, "PATCH", "USER", "ou2", "bob@corp.example", "", events.LogSuccess, 200))
	out = append(out, g.ev(events.LoginDenied{UserID: events.UserID(g.idp, "bob@corp.example"), Email: "bob@corp.example", Reason: "locked"}))
	r := scimUser("ou2", "bob@corp.example", "Bob", true, 3, p)
	r.Changed = []string{"active"}
	out = append(out, g.ev(r))
	out = append(out, g.login("bob@corp.example", "Bob B", "sb2", true))
	return out
}

func recEntraReauth(g *gen) []events.Event {
	p := pol(events.UpdateReauth, true, false)
	var out []events.Event
	out = append(out, g.ev(events.SCIMGroupUpserted{GroupID: "staff", DisplayName: "Staff", Created: true, ResourceVersion: 1, Policy: p}))
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		out = append(out, g.ev(scimUser(id, id+"@tenant.example", "User "+id, true, 1, p)))
	}
	m := events.Chunk("staff", "Staff", true, []string{"e1", "e2", "e3"}, nil, 2)[0]
	m.Policy = p
	out = append(out, g.ev(m))
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		out = append(out, g.login(id+"@tenant.example", "User "+id, "s-"+id, true))
	}
	c0 := events.SCIMGroupMembers{GroupID: "staff", DisplayName: "Staff", Replace: true, Added: []string{"e4"}, Removed: []string{}, Chunk: 0, Chunks: 2, ResourceVersion: 3, Policy: p}
	c1 := events.SCIMGroupMembers{GroupID: "staff", DisplayName: "Staff", Added: []string{"e1", "e2"}, Removed: []string{}, Chunk: 1, Chunks: 2, ResourceVersion: 3, Policy: p}
	out = append(out, g.ev(c0), g.ev(c1))
	a := scimUser("e2", "e2@tenant.example", "Renamed e2", true, 2, p)
	stale := scimUser("e2", "e2@tenant.example", "Stale e2", true, 1, p)
	out = append(out, g.ev(a), g.ev(stale))
	out = append(out, g.ev(events.SCIMUserDeleted{UserID: "e3", UserName: "e3@tenant.example", Email: "e3@tenant.example", Groups: []string{}, ResourceVersion: 2, Policy: p}))
	out = append(out, g.ev(scimUser("e3", "e3@tenant.example", "Late e3", true, 1, p)))
	out = append(out, g.ev(scimUser("e3-new", "e3@tenant.example", "User e3", true, 1, p)))
	out = append(out, g.ev(events.SCIMGroupDeleted{GroupID: "staff", DisplayName: "Staff", ResourceVersion: 4, Policy: p}))
	out = append(out, g.login("e3@tenant.example", "User e3", "s-e3b", true))
	return out
}

func recAdminNoAction(g *gen) []events.Event {
	p := pol(events.UpdateNoAction, false, false)
	admin := func(pl events.Payload) events.Event {
		return events.New(g.idp, g.next(), adminCorrelationPrefix+"req1", "", pl)
	}
	var out []events.Event
	out = append(out, g.login("hal@solo.example", "Hal", "h1", false, "admins"))
	uid := events.UserID(g.idp, "hal@solo.example")
	out = append(out, g.ev(scimUser("n1", "hal@solo.example", "Hal Nine", true, 1, p)))
	d := scimUser("n1", "hal@solo.example", "Hal Nine", false, 2, p)
	d.Changed = []string{"active"}
	out = append(out, g.ev(d))
	r := scimUser("n1", "hal@solo.example", "Hal Nine", true, 3, p)
	r.Changed = []string{"active"}
	out = append(out, g.ev(r))
	rv := admin(events.SessionsRevoked{UserID: uid, Email: "hal@solo.example", Reason: events.ReasonAdmin, Cause: "admin API request req1"})
	rv.Data = events.SessionsRevoked{UserID: uid, Email: "hal@solo.example", RevokedBefore: rv.OccurredAt, Reason: events.ReasonAdmin, Cause: "admin API request req1"}
	out = append(out, rv)
	sr := admin(events.SessionsRevoked{UserID: uid, Email: "hal@solo.example", Reason: events.ReasonSeatRemoved})
	sr.Data = events.SessionsRevoked{UserID: uid, Email: "hal@solo.example", RevokedBefore: sr.OccurredAt, Reason: events.ReasonSeatRemoved}
	out = append(out, sr, admin(events.SeatRemoved{UserID: uid, Email: "hal@solo.example", Reason: events.ReasonAdmin}))
	out = append(out, g.login("hal@solo.example", "Hal", "h2", false, "admins", "ops"))
	return out
}

func streamPath(name, ext string) string { return filepath.Join("testdata", "streams", name+ext) }

// TestRecordedStreams replays each recorded stream into fresh stores — once with Replay, once through
// the live consumers — and compares both canonical dumps with the golden one.
func TestRecordedStreams(t *testing.T) {
	t.Parallel()
	for name, build := range recordings {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if *record {
				var clock atomic.Int64
				var recs []events.Record
				for _, e := range build(newGen(&clock, strings.SplitN(name, "-", 2)[0])) {
					recs = append(recs, events.Record{Event: e})
				}
				var b bytes.Buffer
				if err := events.WriteJSONL(&b, recs); err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(filepath.Dir(streamPath(name, ".jsonl")), 0o755)
				if err := os.WriteFile(streamPath(name, ".jsonl"), b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := os.Open(streamPath(name, ".jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			recs, err := events.ReadJSONL(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			var evs []events.Event
			for _, r := range recs {
				evs = append(evs, r.Event)
			}
			// Replay into a fresh store.
			h := newHarness(t)
			h.publish(evs...)
			replayed := readable(h.replayDump())
			// The live consumers into another fresh store.
			l := newHarness(t)
			l.start()
			l.publishPhased(evs)
			l.caughtUp()
			live := readable(l.dump())
			if diff := cmp.Diff(replayed, live); diff != "" {
				t.Errorf("live store differs from Replay (-replay +live):\n%s", diff)
			}
			golden := streamPath(name, ".golden")
			if *update || *record {
				if err := os.WriteFile(golden, []byte(replayed), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), replayed); diff != "" {
				t.Errorf("registry dump differs from %s (-want +got); run with -update if intended:\n%s", golden, diff)
			}
		})
	}
}
