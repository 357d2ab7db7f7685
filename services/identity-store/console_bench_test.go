package identitystore

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

// consoleBench is an identity-store (not running its consumers) with a filled registry and the
// console's handler signed in with the admin token.
type consoleBench struct {
	s       *service
	h       http.Handler
	cookies []*http.Cookie
}

func newConsoleBench(b *testing.B, idps, users int) *consoleBench {
	b.Helper()
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir, cfg.AdminToken, cfg.SCIMBaseURL = b.TempDir(), testToken, "http://scim.test"
	reg := prometheus.NewRegistry()
	s, err := newService(cfg, Deps{NC: nc, JS: js, Logger: quietLog, Registry: reg, Gatherer: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.db.Close() })
	kv, err := s.kv(ctx)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, idps)
	for i := range ids {
		ids[i] = fmt.Sprintf("idp%02d", i)
		p := events.IdP{ID: ids[i], Name: fmt.Sprintf("IdP %02d", i), Type: "oidc", Config: events.OIDCConfig{ClientID: "c", ClientSecret: "s", Issuer: "https://idp.example"},
			SCIMConfig: events.SCIMConfig{Enabled: true, IdentityUpdateBehavior: events.UpdateAutomatic}}
		raw, _ := json.Marshal(p)
		if _, err := kv.Put(ctx, p.ID, raw); err != nil {
			b.Fatal(err)
		}
	}
	// Users go through the projection's own index code (putUser), in large transactions.
	p := &projector{}
	first := []string{"Lena", "Lars", "Anna", "Jonas", "Mia", "Paul", "Sofia", "Ben", "Emma", "Noah"}
	last := []string{"Schmidt", "Berg", "Lenz", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann", "Koch", "Richter"}
	const perTx = 20_000
	for lo := 0; lo < users; lo += perTx {
		err := s.db.Update(func(tx *bolt.Tx) error {
			t := &txn{tx: tx, ev: events.Event{Type: "scim.user.upserted", OccurredAt: epoch}}
			for i := lo; i < min(lo+perTx, users); i++ {
				email := fmt.Sprintf("%s.%s%06d@bench.example", strings.ToLower(first[i%10]), strings.ToLower(last[(i/10)%10]), i)
				u := &user{ID: fmt.Sprintf("u%07d", i), IdPID: ids[i%idps], Email: email, Name: first[i%10] + " " + last[(i/10)%10],
					Groups: []events.Group{{ID: "g", Name: "Staff"}}, CreatedAt: epoch, UpdatedAt: epoch}
				if i%3 != 0 {
					u.FirstLoginAt, u.LastLoginAt, u.SeatTakenAt = epoch, epoch, epoch
				}
				if err := p.putUser(t, &change{u: u}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for i, id := range ids { // one provisioning-log row per IdP
		err := s.db.Update(func(tx *bolt.Tx) error {
			t := &txn{tx: tx, ev: events.Event{ID: fmt.Sprintf("log%02d", i), IdPID: id, OccurredAt: epoch.Add(time.Duration(i) * time.Second)}}
			return p.scimLog(t, events.SCIMLog{RequestID: "r", Method: "PATCH", Path: "/Users/x", ResourceType: "USER", Status: events.LogSuccess, HTTPStatus: 200})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	h, err := s.handler()
	if err != nil {
		b.Fatal(err)
	}
	cb := &consoleBench{s: s, h: h}
	rec := cb.get("/ui/signin")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(rec.Body.String())[1]
	cb.cookies = rec.Result().Cookies()
	req := httptest.NewRequest("POST", "/ui/signin", strings.NewReader(url.Values{"csrf": {csrf}, "token": {testToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range cb.cookies {
		req.AddCookie(c)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	cb.cookies = rec.Result().Cookies()
	if rec.Code != http.StatusSeeOther {
		b.Fatalf("sign-in = %d", rec.Code)
	}
	return cb
}

func (cb *consoleBench) get(path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil)
	for _, c := range cb.cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	cb.h.ServeHTTP(rec, req)
	return rec
}

// run times each request of paths in turn and reports p50 and p99 per page.
func (cb *consoleBench) run(b *testing.B, paths []string, want string) {
	lat := make([]time.Duration, 0, b.N)
	worst := map[string]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		path := paths[i%len(paths)]
		t0 := time.Now()
		rec := cb.get(path)
		d := time.Since(t0)
		lat = append(lat, d)
		worst[path] = max(worst[path], d)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			b.Fatalf("GET %s = %d, want 200 with %q:\n%.2000s", path, rec.Code, want, rec.Body.String())
		}
	}
	b.StopTimer()
	for _, p := range paths {
		b.Logf("slowest %-45s %v", p, worst[p])
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkConsolePeople renders the people page of a registry with 100,000 users (10 IdPs): plain
// pages deep into the list, prefix searches by email and by name (with and without filters), and
// the status filter, each a page of 50.
func BenchmarkConsolePeople(b *testing.B) {
	cb := newConsoleBench(b, 10, 100_000)
	paths := []string{
		"/ui/people", "/ui/people?page=1500", "/ui/people?idp_id=idp03&page=150",
		"/ui/people?q=lena.schmidt00", "/ui/people?q=weber", "/ui/people?q=anna+lenz", "/ui/people?q=m&page=20",
		"/ui/people?q=jonas&idp_id=idp03", "/ui/people?status=provisioned&page=400", "/ui/people?status=active&idp_id=idp07&page=50",
		"/ui/people?q=noah&status=active",
	}
	cb.run(b, paths, "<tbody>")
}

// BenchmarkConsoleOverview renders the overview with 50 IdPs (each with users, seats and a last
// SCIM request) and the pipeline read from JetStream.
func BenchmarkConsoleOverview(b *testing.B) {
	cb := newConsoleBench(b, 50, 5_000)
	cb.run(b, []string{"/ui/"}, "IdP 49")
}
