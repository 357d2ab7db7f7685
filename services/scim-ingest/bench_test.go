package scimingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// Benchmarks for the performance targets in docs/benchmarks.md, each with a same-run baseline: a plain net/http
// handler that decodes the request and answers JSON, no storage. All run with durability on (bbolt
// fsync per commit, JetStream SyncAlways). Run:
//
//	go test -run '^$' -bench . -benchtime 2000x ./services/scim-ingest/

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Minute}}

func benchDo(b *testing.B, method, u, secret string, body []byte) int {
	req, _ := http.NewRequest(method, u, bytes.NewReader(body))
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	req.Header.Set("Content-Type", "application/scim+json")
	res, err := benchClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// baseline serves a plain net/http handler: decode the body if any, answer a small JSON document.
func baseline(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		w.Header().Set("Content-Type", "application/scim+json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		json.NewEncoder(w).Encode(map[string]any{"id": "x", "userName": "u@x.test", "meta": map[string]any{"version": `W/"1"`}})
	})}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func (h *harness) base() string { return h.url + "/populations/idp1/scim/v2" }

// BenchmarkCreateUsers32: user creates with 32 concurrent clients; concurrent requests are committed
// together. Reports creates/s.
func BenchmarkCreateUsers32(b *testing.B) {
	b.Run("scim-ingest", func(b *testing.B) {
		h := newHarness(b, noRateLimit)
		var n atomic.Int64
		start := time.Now()
		benchParallel32(b, func() int {
			body := fmt.Appendf(nil, `{"schemas":["%s"],"userName":"bench%d@x.test","name":{"givenName":"B","familyName":"C"},"emails":[{"type":"work","primary":true,"value":"bench%d@x.test"}],"active":true}`, scimschema.User, n.Add(1), n.Load())
			return benchDo(b, "POST", h.base()+"/Users", "s3cret-idp1", body)
		}, http.StatusCreated)
		// End to end: until every create's events are acknowledged by JetStream (SyncAlways).
		httpDone := time.Now()
		h.waitDrained()
		b.ReportMetric(time.Since(httpDone).Seconds(), "drain-s")
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "published-creates/s")
	})
	b.Run("baseline-net-http", func(b *testing.B) {
		u := baseline(b)
		benchParallel32(b, func() int {
			return benchDo(b, "POST", u+"/Users", "", []byte(`{"userName":"u@x.test"}`))
		}, http.StatusCreated)
	})
}

func benchParallel32(b *testing.B, do func() int, want int) {
	b.SetParallelism(max(1, 32/runtimeProcs()))
	var bad atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if do() != want {
				bad.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	if bad.Load() > 0 {
		b.Fatalf("%d requests did not answer %d", bad.Load(), want)
	}
}

// seedStore writes users (and optionally one group holding all of them) straight into a stopped
// service's bbolt file, with the same store functions the handlers use, in large transactions.
// Seeding 100,000 resources over HTTP would dominate the benchmark's run time.
func seedStore(b *testing.B, dataDir, idp string, users int, bigGroup bool) (uids []string, gid string) {
	db, err := boltdb.Open(filepath.Join(dataDir, Name+".db"), append([]string{outbox.Bucket}, allBuckets...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	var ids idGen
	for range users {
		uids = append(uids, ids.next(now))
	}
	const batch = 10000
	for lo := 0; lo < users; lo += batch {
		err := db.Update(func(tx *bolt.Tx) error {
			for i := lo; i < min(lo+batch, users); i++ {
				attrs := canonical(map[string]any{"userName": fmt.Sprintf("user%06d@x.test", i), "active": true,
					"emails": []any{map[string]any{"type": "work", "value": fmt.Sprintf("user%06d@x.test", i)}}})
				if err := putRec(tx, bucketUsers, idp, uids[i], &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}); err != nil {
					return err
				}
				if err := reindex(tx, uids[i], nil, userIndexKeys(idp, uids[i], attrs)); err != nil {
					return err
				}
				if bigGroup {
					if gid == "" {
						gid = "big-group"
					}
					if err := addMember(tx, idp, gid, uids[i]); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if bigGroup {
		err := db.Update(func(tx *bolt.Tx) error {
			attrs := map[string]any{"displayName": "Everyone"}
			if err := putRec(tx, bucketGroups, idp, gid, &resourceRec{Attrs: attrs, Version: 1, Created: now, Modified: now}); err != nil {
				return err
			}
			return reindex(tx, gid, nil, groupIndexKeys(idp, gid, attrs))
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return uids, gid
}

// seededHarness starts the service on a store seeded with users users (and the big group).
func seededHarness(b *testing.B, users int, bigGroup bool) (*harness, []string, string) {
	h := newHarness(b, noRateLimit)
	h.stopService()
	uids, gid := seedStore(b, h.cfg.DataDir, "idp1", users, bigGroup)
	h.startService()
	return h, uids, gid
}

// latencies runs do b.N times sequentially (one client) and reports p50 and p99 in ms.
func latencies(b *testing.B, do func(i int) int, want int) {
	d := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if got := do(i); got != want {
			b.Fatalf("request %d = %d, want %d", i, got, want)
		}
		d = append(d, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(d)
	pct := func(p float64) float64 { return float64(d[min(len(d)-1, int(float64(len(d))*p))]) / 1e6 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkPatchOneMember100k: add or remove one member of a 100,000-member group (alternating).
func BenchmarkPatchOneMember100k(b *testing.B) {
	b.Run("scim-ingest", func(b *testing.B) {
		h, uids, gid := seededHarness(b, 100001, false)
		// Fill the group over HTTP in 10,000-member PATCHes, leaving one user out.
		for lo := 0; lo < 100000; lo += 10000 {
			var ms []map[string]any
			for _, id := range uids[lo : lo+10000] {
				ms = append(ms, map[string]any{"value": id})
			}
			if gid == "" {
				r := h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "Everyone"})
				gid = str(r.body["id"])
			}
			body, _ := json.Marshal(patchBody(map[string]any{"op": "add", "path": "members", "value": ms}))
			if st := benchDo(b, "PATCH", h.base()+"/Groups/"+gid, "s3cret-idp1", body); st != 204 {
				b.Fatalf("fill PATCH = %d", st)
			}
		}
		extra := uids[100000]
		add, _ := json.Marshal(patchBody(map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": extra}}}))
		rm, _ := json.Marshal(patchBody(map[string]any{"op": "remove", "path": fmt.Sprintf("members[value eq %q]", extra)}))
		latencies(b, func(i int) int {
			body := add
			if i%2 == 1 {
				body = rm
			}
			return benchDo(b, "PATCH", h.base()+"/Groups/"+gid, "s3cret-idp1", body)
		}, http.StatusNoContent)
	})
	b.Run("baseline-net-http", func(b *testing.B) {
		u := baseline(b)
		latencies(b, func(int) int { return benchDo(b, "PATCH", u+"/Groups/g", "", []byte(`{"Operations":[]}`)) }, http.StatusOK)
	})
}

// BenchmarkFilterUserName100k: GET /Users?filter=userName eq "…" among 100,000 users.
func BenchmarkFilterUserName100k(b *testing.B) {
	b.Run("scim-ingest", func(b *testing.B) {
		h, _, _ := seededHarness(b, 100000, false)
		latencies(b, func(i int) int {
			f := url.QueryEscape(fmt.Sprintf(`userName eq "USER%06d@x.test"`, (i*7919)%100000))
			return benchDo(b, "GET", h.base()+"/Users?filter="+f, "s3cret-idp1", nil)
		}, http.StatusOK)
	})
	b.Run("baseline-net-http", func(b *testing.B) {
		u := baseline(b)
		latencies(b, func(int) int { return benchDo(b, "GET", u+"/Users?filter=x", "", nil) }, http.StatusOK)
	})
}

// BenchmarkGetGroupExcludedMembers: GET /Groups/{id}?excludedAttributes=members for a 10-member and a
// 100,000-member group; the two must cost the same.
func BenchmarkGetGroupExcludedMembers(b *testing.B) {
	for _, n := range []int{10, 100000} {
		b.Run(fmt.Sprintf("scim-ingest-members-%d", n), func(b *testing.B) {
			h, _, gid := seededHarness(b, n, true)
			latencies(b, func(int) int {
				return benchDo(b, "GET", h.base()+"/Groups/"+gid+"?excludedAttributes=members", "s3cret-idp1", nil)
			}, http.StatusOK)
		})
	}
	b.Run("baseline-net-http", func(b *testing.B) {
		u := baseline(b)
		latencies(b, func(int) int { return benchDo(b, "GET", u+"/Groups/g", "", nil) }, http.StatusOK)
	})
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkJetStreamPublish is the baseline for published-creates/s: async publishes of 600-byte
// messages to the SCIM stream of the same embedded server (file storage, SyncAlways), acks awaited.
func BenchmarkJetStreamPublish(b *testing.B) {
	h := newHarness(b)
	payload := bytes.Repeat([]byte("x"), 600)
	b.ResetTimer()
	start := time.Now()
	var futures []jetstream.PubAckFuture
	for i := range b.N {
		f, err := h.js.PublishAsync(fmt.Sprintf("scimlog.bench%d", i%4), payload)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == 256 || i == b.N-1 {
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
			futures = futures[:0]
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
