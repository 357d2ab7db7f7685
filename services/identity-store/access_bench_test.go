package identitystore

import (
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
)

var testerUsers = flag.Int("tester-users", 100_000, "registry size for BenchmarkAccessTester (the target is ≤ 2 s at 100000)")

// BenchmarkAccessTester measures the policy tester over a whole registry: users with 10 SCIM groups
// each (a realistic record: SCIM state, timestamps, oidc_fields), an app of 10 policies with 10
// selectors each. Reports the seconds per whole-registry run. Run with -bench AccessTester -benchtime 3x.
func BenchmarkAccessTester(b *testing.B) {
	n := *testerUsers
	db, err := openStore(filepath.Join(b.TempDir(), "tester.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const perTx = 20_000
	for lo := 0; lo < n; lo += perTx {
		err := db.Update(func(tx *bolt.Tx) error {
			for i := lo; i < min(lo+perTx, n); i++ {
				email := fmt.Sprintf("user%08d@tester.example", i)
				var gs []events.Group
				for g := range 10 {
					gs = append(gs, events.Group{ID: fmt.Sprintf("g%d", (i+g)%200), Name: fmt.Sprintf("Group %d", (i+g)%200)})
				}
				u := user{ID: events.UserID("okta", email), IdPID: "okta", Email: email, Name: "User Name", Groups: gs, SCIMGroups: gs,
					OIDCFields: map[string]any{"department": "R&D", "roles": []any{"a", "b"}}, SCIMUserID: fmt.Sprint(i),
					SCIM:         &scimState{UserID: fmt.Sprint(i), UserName: email, Email: email, DisplayName: "User Name", Active: true, Version: 3},
					FirstLoginAt: epoch, LastLoginAt: epoch, SeatTakenAt: epoch, CreatedAt: epoch, UpdatedAt: epoch}
				raw, _ := json.Marshal(u)
				if err := tx.Bucket([]byte(bkUsers)).Put([]byte(u.ID), raw); err != nil {
					return err
				}
				if err := putAccessIdent(tx, &u); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	app := access.App{ID: "bench", Name: "Bench", Domain: "bench.example"}
	for p := range 10 {
		pol := access.Policy{Name: fmt.Sprintf("p%d", p), Decision: access.Allow, Precedence: p + 1}
		if p%3 == 0 && p != 9 {
			pol.Decision = access.Deny
		}
		for s := range 10 {
			pol.Include = append(pol.Include, access.Selector{Group: &access.GroupSel{Name: fmt.Sprintf("group %d", 1000+p*10+s)}})
		}
		if p == 9 {
			pol.Include[9] = access.Selector{Group: &access.GroupSel{Name: "Group 7"}}
		}
		app.Policies = append(app.Policies, pol)
	}
	c, err := access.CompileApp(app)
	if err != nil {
		b.Fatal(err)
	}
	s := &service{db: db}
	b.ResetTimer()
	var rep testReport
	t0, c0 := time.Now(), cpuTime()
	for range b.N {
		if rep, err = s.testApp(c, nil, "/"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if rep.Summary.Users != n || rep.Summary.Allowed == 0 {
		b.Fatalf("summary = %+v, want %d users, some allowed", rep.Summary, n)
	}
	b.ReportMetric(time.Since(t0).Seconds()/float64(b.N), "s/run")
	// CPU time (the tester runs on one goroutine): what a run costs on an idle core, whatever else
	// the machine is doing.
	b.ReportMetric((cpuTime()-c0).Seconds()/float64(b.N), "cpu-s/run")
	b.ReportMetric(float64(n), "users")
}
