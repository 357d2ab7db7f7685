package identitystore

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

var lookupUsers = flag.Int("lookup-users", 100_000, "registry size for BenchmarkLookupByEmail (the target is measured at 1000000)")

// benchStream is a realistic mix: provisioning with provisioning-log rows, group membership, logins,
// attribute changes and some deprovisioning, for users users.
func benchStream(users int) []events.Event {
	var clock atomic.Int64
	g := newGen(&clock, "okta")
	p := pol(events.UpdateAutomatic, true, true)
	var out []events.Event
	out = append(out, g.ev(events.SCIMGroupUpserted{GroupID: "all", DisplayName: "All", Created: true, ResourceVersion: 1, Policy: p}))
	for i := range users {
		id := fmt.Sprintf("u%07d", i)
		email := id + "@bench.example"
		out = append(out, g.ev(scimUser(id, email, "User "+id, true, 1, p)))
		out = append(out, g.ev(events.SCIMLog{RequestID: id, Method: "POST", ResourceType: "USER", ResourceID: id, ResourceUserEmail: email, Status: events.LogSuccess, HTTPStatus: 201}))
		m := events.Chunk("all", "All", false, []string{id}, nil, int64(i+2))[0]
		m.Policy = p
		out = append(out, g.ev(m))
		out = append(out, g.login(email, "User "+id, "s-"+id, true))
		if i%5 == 0 {
			out = append(out, g.ev(scimUser(id, email, "Renamed "+id, i%10 != 0, 2, p)))
		}
	}
	return out
}

type sliceSource struct {
	msgs []*replayMsg
	i    int
}

func (s *sliceSource) next(context.Context) (*replayMsg, error) {
	if s.i == len(s.msgs) {
		return nil, nil
	}
	s.i++
	return s.msgs[s.i-1], nil
}

// BenchmarkReplayApply measures the projection alone: events applied and committed in groups into a
// fresh bbolt file (fsync on every commit), without NATS.
func BenchmarkReplayApply(b *testing.B) {
	evs := benchStream(5000)
	msgs := make([]*replayMsg, len(evs))
	for i, e := range evs {
		msgs[i] = &replayMsg{durable: "bench", seq: uint64(i + 1), ev: e}
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for range b.N {
		db, err := openStore(filepath.Join(b.TempDir(), "r.db"))
		if err != nil {
			b.Fatal(err)
		}
		if err := replayInto(context.Background(), db, &sliceSource{msgs: msgs}, ReplayOptions{}); err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
	b.ReportMetric(float64(len(evs)*b.N)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64(len(evs)*b.N)/(cpuTime()-cpu0).Seconds(), "events/cpu-s")
}

// BenchmarkReplay measures `scimflow replay identity-store`: reading the streams from an embedded
// JetStream and rebuilding a fresh registry file.
func BenchmarkReplay(b *testing.B) {
	emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Shutdown()
	nc, _ := emb.Connect("bench")
	defer nc.Close()
	js, _ := newJS(nc)
	ctx := context.Background()
	if _, err := broker.EnsureStreams(ctx, js, broker.StreamsConfig{}); err != nil {
		b.Fatal(err)
	}
	evs := benchStream(5000)
	for i, e := range evs {
		data, _ := events.Marshal(e)
		if _, err := js.PublishAsync(e.Subject, data); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 || i == len(evs)-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publish did not complete")
			}
		}
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for range b.N {
		if err := Replay(ctx, js, filepath.Join(b.TempDir(), "r.db")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(evs)*b.N)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64(len(evs)*b.N)/(cpuTime()-cpu0).Seconds(), "events/cpu-s") // includes the embedded server
}

// cpuTime is the process's user+system CPU time: on a shared machine, events per CPU-second says
// more than wall-clock throughput.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLookupByEmail looks users up by email (index, then the record, decoded) in a registry of
// -lookup-users users and reports the p99 latency of single lookups.
func BenchmarkLookupByEmail(b *testing.B) {
	n := *lookupUsers
	db, err := openStore(filepath.Join(b.TempDir(), "lookup.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const perTx = 50_000
	for lo := 0; lo < n; lo += perTx {
		err := db.Update(func(tx *bolt.Tx) error {
			for i := lo; i < min(lo+perTx, n); i++ {
				email := fmt.Sprintf("user%08d@lookup.example", i)
				u := user{ID: events.UserID("okta", email), IdPID: "okta", Email: email, Name: "User", Groups: []events.Group{{ID: "g", Name: "Staff"}},
					SCIMUserID: fmt.Sprint(i), FirstLoginAt: epoch, LastLoginAt: epoch, SeatTakenAt: epoch, CreatedAt: epoch, UpdatedAt: epoch}
				raw, _ := json.Marshal(u)
				if err := tx.Bucket([]byte(bkUsers)).Put([]byte(u.ID), raw); err != nil {
					return err
				}
				if err := tx.Bucket([]byte(bkEmail)).Put(key(email, "okta"), []byte(u.ID)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		email := fmt.Sprintf("USER%08d@lookup.example", (i*7919)%n)
		t0 := time.Now()
		var u *user
		err := db.View(func(tx *bolt.Tx) error {
			var err error
			u, err = getUser(tx, lookupEmail(tx, "okta", email))
			return err
		})
		lat = append(lat, time.Since(t0))
		if err != nil || u == nil {
			b.Fatalf("lookup %s: %v %v", email, u, err)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(n), "users")
}

func newJS(nc *nats.Conn) (jetstream.JetStream, error) { return jetstream.New(nc) }
