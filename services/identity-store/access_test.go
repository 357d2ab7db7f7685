package identitystore

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

func grafanaApp(domain string) map[string]any {
	return map[string]any{
		"name": "Grafana", "domain": domain,
		"policies": []any{
			map[string]any{"name": "health", "decision": "bypass", "include": []any{map[string]any{"everyone": map[string]any{}}}, "paths": []string{"/api/health"}},
			map[string]any{"name": "contractors out", "decision": "deny", "precedence": 1,
				"include": []any{map[string]any{"email_domain": map[string]any{"domain": "contractor.example"}}}},
			map[string]any{"name": "engineers", "decision": "allow", "precedence": 2,
				"include": []any{map[string]any{"group": map[string]any{"name": "Engineering"}}}},
		},
	}
}

// kvApps returns the access_apps bucket's contents (id → app).
func kvApps(t *testing.T, js jetstream.JetStream) map[string]access.App {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, broker.KVAccessApps)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]access.App{}
	keys, err := kv.Keys(ctx)
	if err != nil && err != jetstream.ErrNoKeysFound {
		t.Fatal(err)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err == jetstream.ErrKeyNotFound || err == jetstream.ErrKeyDeleted {
			continue // deleted since Keys
		}
		if err != nil {
			t.Fatal(err)
		}
		var a access.App
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			t.Fatal(err)
		}
		out[k] = a
	}
	return out
}

// TestAccessAppsAPI covers CRUD, validation reporting every problem, the first-app warning, the KV
// mirror, the IDENTITY audit events and the replay oracle.
func TestAccessAppsAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	h.caughtUp()

	if r := a.do("GET", "/api/v1/access/apps", "", nil); r.Status != 401 {
		t.Errorf("no token: %d, want 401", r.Status)
	}
	bad := `{"name":"","domain":"https://x","policies":[{"name":"p","decision":"allow","include":[{"nope":{}}]},{"name":"q","decision":"allow","precedence":1,"include":[{"ip":{"ip":"1.2.3.4/99"}}]}]}`
	r := a.call("POST", "/api/v1/access/apps", bad, 400, nil)
	var msgs []string
	for _, e := range r.Errors {
		msgs = append(msgs, e.Message)
	}
	for _, want := range []string{"name: required", "domain:", "policies[0].precedence: required", `policies[0].include[0]: unknown selector "nope"`, "policies[1].include[0]: ip.ip:"} {
		if !strings.Contains(strings.Join(msgs, "\n"), want) {
			t.Errorf("validation errors %q lack %q", msgs, want)
		}
	}
	if r := a.call("POST", "/api/v1/access/apps", `{"name":"x","domain":"x.example","policies":[],"bogus":1}`, 400, nil); len(r.Errors) != 1 {
		t.Errorf("unknown field: %v, want one error", r.Errors)
	}
	if r := a.call("POST", "/api/v1/access/apps", map[string]any{"name": "x", "domain": "x.example", "policies": []any{}, "allowed_idps": []string{"nope"}}, 400, nil); !strings.Contains(r.Errors[0].Message, `no identity provider "nope"`) {
		t.Errorf("unknown IdP: %v", r.Errors)
	}
	if len(kvApps(t, h.js)) != 0 {
		t.Fatal("a refused app reached the KV bucket")
	}

	var app access.App
	r = a.call("POST", "/api/v1/access/apps", grafanaApp("grafana.corp.example"), 201, &app)
	if app.ID == "" || app.Name != "Grafana" || len(app.Policies) != 3 || app.CreatedAt.IsZero() {
		t.Errorf("created app = %+v", app)
	}
	if len(r.Messages) != 1 || !strings.Contains(r.Messages[0], "no_application") {
		t.Errorf("first app messages = %q, want the no_application warning", r.Messages)
	}
	var second access.App
	r = a.call("POST", "/api/v1/access/apps", grafanaApp("corp.example/admin"), 201, &second)
	if len(r.Messages) != 0 {
		t.Errorf("second app messages = %q, want none", r.Messages)
	}
	r = a.call("POST", "/api/v1/access/apps", grafanaApp("GRAFANA.corp.example/"), 400, nil)
	if !strings.Contains(r.Errors[0].Message, "already the domain of application "+app.ID) {
		t.Errorf("duplicate domain: %v", r.Errors)
	}

	var got access.App
	a.call("GET", "/api/v1/access/apps/"+app.ID, nil, 200, &got)
	if diff := cmp.Diff(app, got, cmp.Comparer(func(x, y access.Selector) bool { return x.Kind() == y.Kind() })); diff != "" {
		t.Errorf("GET app (-created +got):\n%s", diff)
	}
	a.call("GET", "/api/v1/access/apps/nope", nil, 404, nil)

	upd := grafanaApp("grafana.corp.example")
	upd["session_duration"] = "8h"
	a.call("PUT", "/api/v1/access/apps/"+app.ID, upd, 200, &got)
	if got.SessionDuration != "8h" || got.ID != app.ID || !got.CreatedAt.Equal(app.CreatedAt) {
		t.Errorf("updated app = %+v", got)
	}
	upd["domain"] = "corp.example/admin"
	a.call("PUT", "/api/v1/access/apps/"+app.ID, upd, 400, nil)

	var list []access.App
	a.call("GET", "/api/v1/access/apps", nil, 200, &list)
	if len(list) != 2 {
		t.Errorf("list = %d apps, want 2", len(list))
	}
	eventually(t, "the KV bucket mirrors the registry", func() bool {
		m := kvApps(t, h.js)
		return len(m) == 2 && m[app.ID].SessionDuration == "8h" && m[second.ID].Domain == "corp.example/admin"
	})

	r = a.call("DELETE", "/api/v1/access/apps/"+second.ID, nil, 200, nil)
	if len(r.Messages) != 0 {
		t.Errorf("delete with one app left: messages %q", r.Messages)
	}
	r = a.call("DELETE", "/api/v1/access/apps/"+app.ID, nil, 200, nil)
	if len(r.Messages) != 1 || !strings.Contains(r.Messages[0], "every authenticated session") {
		t.Errorf("delete of the last app: messages %q", r.Messages)
	}
	eventually(t, "the KV bucket is empty", func() bool { return len(kvApps(t, h.js)) == 0 })

	// Every admin change is an IDENTITY event (the audit trail): 2 creates, 1 update, 2 deletes.
	var changes []events.AccessAppChanged
	for _, e := range h.streamEvents(events.StreamIdentity) {
		if c, ok := e.Data.(events.AccessAppChanged); ok {
			changes = append(changes, c)
			if !strings.HasPrefix(c.Cause, "admin API request ") {
				t.Errorf("change cause = %q", c.Cause)
			}
		}
	}
	if len(changes) != 5 || !changes[3].Deleted || changes[2].AppID != app.ID {
		t.Errorf("IDENTITY access events = %+v, want 2 creates, 1 update, 2 deletes", changes)
	}

	// Put one back, then check the replay oracle: a rebuild from the streams equals the live store.
	a.call("POST", "/api/v1/access/apps", grafanaApp("grafana.corp.example"), 201, nil)
	h.caughtUp()
	if diff := cmp.Diff(readable(h.replayDump()), readable(h.dump())); diff != "" {
		t.Errorf("replay differs from the live store (-replay +live):\n%s", diff)
	}
}

// TestAccessAppsKVHealed: an entry removed from or changed in the bucket behind identity-store's back
// is restored from the registry after a restart (and periodically).
func TestAccessAppsKVHealed(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	var app access.App
	a.call("POST", "/api/v1/access/apps", grafanaApp("grafana.corp.example"), 201, &app)
	eventually(t, "the KV bucket has the app", func() bool { return len(kvApps(t, h.js)) == 1 })
	ctx := context.Background()
	kv, _ := h.js.KeyValue(ctx, broker.KVAccessApps)
	if err := kv.Delete(ctx, app.ID); err != nil {
		t.Fatal(err)
	}
	kv.Put(ctx, "stray", []byte(`{}`))
	h.stop()
	h.start()
	eventually(t, "the KV bucket is healed", func() bool {
		m := kvApps(t, h.js)
		_, stray := m["stray"]
		return len(m) == 1 && m[app.ID].Domain == "grafana.corp.example" && !stray
	})
}

// TestAccessTester runs the policy tester over registry users: token groups for a user SCIM does not
// know, deprovisioned users, the listed-emails form and a draft app.
func TestAccessTester(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	g := h.gen("okta")
	p := pol(events.UpdateAutomatic, true, true)
	h.publishPhased([]events.Event{
		g.login("eng@corp.example", "Eng", "s1", false, "Engineering"),
		g.login("sales@corp.example", "Sales", "s2", false, "Sales"),
		g.login("bob@contractor.example", "Bob", "s3", false, "Engineering"),
		g.ev(scimUser("u4", "gone@corp.example", "Gone", false, 1, p)),
	})
	var app access.App
	a.call("POST", "/api/v1/access/apps", grafanaApp("grafana.corp.example"), 201, &app)

	var rep testReport
	a.call("POST", "/api/v1/access/apps/"+app.ID+"/test", nil, 200, &rep)
	want := testSummary{Users: 4, Allowed: 1, Denied: 3, ByReason: map[string]int{"engineers": 1, "contractors out": 1, access.ReasonNoPolicy: 1, testInactive: 1}}
	if diff := cmp.Diff(want, rep.Summary); diff != "" || rep.Users != nil {
		t.Errorf("whole-registry test (-want +got):\n%s\nusers %v", diff, rep.Users)
	}

	a.call("POST", "/api/v1/access/apps/"+app.ID+"/test", map[string]any{"emails": []string{"ENG@corp.example", "nobody@corp.example"}}, 200, &rep)
	if len(rep.Users) != 2 || rep.Users[0].Decision != access.Allow || rep.Users[0].Policy != "engineers" ||
		rep.Users[1].Found || rep.Users[1].Reason != testNotInRegistry {
		t.Errorf("listed test = %+v", rep.Users)
	}

	draft := grafanaApp("new.corp.example")
	draft["allowed_idps"] = []string{"entra"}
	a.call("POST", "/api/v1/access/apps/test", map[string]any{"app": draft, "emails": []string{"eng@corp.example"}}, 200, &rep)
	if len(rep.Users) != 1 || rep.Users[0].Reason != access.ReasonIdPNotAllowed {
		t.Errorf("draft test = %+v, want idp_not_allowed", rep.Users)
	}
	a.call("POST", "/api/v1/access/apps/test", map[string]any{"app": map[string]any{"name": "x"}}, 400, nil)
	a.call("POST", "/api/v1/access/apps/"+app.ID+"/test", `{"emails": "x"}`, 400, nil)
	a.call("POST", "/api/v1/access/apps/nope/test", nil, 404, nil)
}

// TestAccessLogs: records from the AUTH stream are queryable with filters and paging.
func TestAccessLogs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.start()
	a := newAPI(t, s)
	g := h.gen(events.AccessScope)
	var evs []events.Event
	for i, d := range []events.AccessDecided{
		{AppID: "a1", Decision: "allow", Reason: "engineers", Email: "Ann@corp.example", Host: "g.example", Path: "/"},
		{AppID: "a1", Decision: "deny", Reason: "no_policy", Email: "sam@corp.example", Host: "g.example", Path: "/"},
		{AppID: "a2", Decision: "deny", Reason: "contractors out", Email: "bob@contractor.example", Host: "h.example", Path: "/x"},
		{AppID: "", Decision: "deny", Reason: "no_application", ClientIP: "192.0.2.1", Host: "z.example", Path: "/"},
	} {
		d.Replica = "r1"
		d.Repeats = i
		evs = append(evs, g.ev(d))
	}
	h.publishPhased(evs)
	var rows []accessRow
	a.call("GET", "/api/v1/logs/access", nil, 200, &rows)
	if len(rows) != 4 || rows[0].Reason != "no_application" || rows[3].Email != "ann@corp.example" {
		t.Errorf("all rows (newest first) = %+v", rows)
	}
	a.call("GET", "/api/v1/logs/access?app_id=a1&decision=deny", nil, 200, &rows)
	if len(rows) != 1 || rows[0].Email != "sam@corp.example" {
		t.Errorf("a1 denies = %+v", rows)
	}
	a.call("GET", "/api/v1/logs/access?email=ANN@corp.example", nil, 200, &rows)
	if len(rows) != 1 || rows[0].Reason != "engineers" {
		t.Errorf("ann = %+v", rows)
	}
	a.call("GET", "/api/v1/logs/access?direction=asc&limit=2", nil, 200, &rows)
	if len(rows) != 2 || rows[0].Reason != "engineers" {
		t.Errorf("asc limit 2 = %+v", rows)
	}
	since := rows[1].LoggedAt.Format(time.RFC3339Nano)
	a.call("GET", "/api/v1/logs/access?direction=asc&since="+since, nil, 200, &rows)
	if len(rows) != 3 || rows[0].Reason != "no_policy" {
		t.Errorf("since the second = %+v", rows)
	}
	a.call("GET", "/api/v1/logs/access?until="+since, nil, 200, &rows)
	if len(rows) != 2 || rows[0].Reason != "no_policy" {
		t.Errorf("until the second = %+v", rows)
	}
	r := a.call("GET", "/api/v1/logs/access?decision=maybe&limit=0&since=x", nil, 400, nil)
	if len(r.Errors) != 3 {
		t.Errorf("bad query: %v, want three errors", r.Errors)
	}
}

// TestAccessIdentBackfill: a registry file written before the access-identity index existed gets it
// built at open, equal to what the projection writes.
func TestAccessIdentBackfill(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.start()
	g := h.gen("okta")
	h.publishPhased([]events.Event{g.login("eng@corp.example", "Eng", "s1", false, "Engineering"), g.login("x@corp.example", "X", "s2", false)})
	h.caughtUp()
	want := h.dump()
	h.stop()
	db, err := openStore(h.cfg.DataDir + "/" + Name + ".db")
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte(bkAccessIdent)); err != nil {
			return err
		}
		_, err := tx.CreateBucket([]byte(bkAccessIdent))
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	if diff := cmp.Diff(readable(want), readable(h.dump())); diff != "" {
		t.Errorf("backfilled store differs (-projected +backfilled):\n%s", diff)
	}
}
