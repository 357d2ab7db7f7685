package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/scenario"
)

// readYourWritesRounds is how many times each mode repeats the race. On the code before the barrier
// (c4f85a3) the first round already failed most of the time (9 of 10 automatic logins
// without their SCIM groups); 7 rounds × 3 modes is 21 tries.
const readYourWritesRounds = 7

// TestLoginReadsItsWrites: a login that starts after a SCIM response reflects it,
// in every mode. Each round provisions a person, adds them to Ops, creates Finance with them, and
// logs in at once: the session's very first /verify must carry exactly [Finance Ops] (the SCIM state
// at login), and in reauth the session must not be revoked afterwards by the membership changes it
// already reflects. The login callback's time is logged (p50/p99) for docs/benchmarks.md.
func TestLoginReadsItsWrites(t *testing.T) {
	t.Parallel()
	e := shared.get(t)
	var mu sync.Mutex
	var took, idle []time.Duration // logins right after SCIM writes; logins with nothing pending
	for _, mode := range []string{"automatic", "reauth", "no_action"} {
		t.Run(mode, func(t *testing.T) {
			tn := newTenant(t, e, "ryw-"+mode, scenario.Okta, mode, true, false)
			ctx := tn.ctx
			for i := range readYourWritesRounds {
				p := tn.person(fmt.Sprint("bob", i), "Bob", fmt.Sprint("R", i))
				tn.must(tn.scim.CreateUser(ctx, p.User))
				ops := &scenario.SCIMGroup{DisplayName: fmt.Sprint("Ops", i)}
				tn.must(tn.scim.CreateGroup(ctx, ops))
				tn.must(tn.scim.AddMembers(ctx, ops, p.User))
				fin := &scenario.SCIMGroup{DisplayName: fmt.Sprint("Finance", i)}
				tn.must(tn.scim.CreateGroup(ctx, fin))
				tn.must(tn.scim.AddMembers(ctx, fin, p.User))
				want := []string{fmt.Sprint("Finance", i), fmt.Sprint("Ops", i)}

				start := time.Now()
				b := tn.login(p) // at once: every SCIM response above has been received
				mu.Lock()
				took = append(took, time.Since(start))
				mu.Unlock()
				v := tn.verify(b)
				if v.Status != http.StatusOK {
					t.Errorf("round %d: first /verify = %d, want 200", i, v.Status)
					continue
				}
				if err := groupsAre(headerGroups(v), want...); err != nil {
					t.Errorf("round %d: first /verify of a login right after the SCIM writes: %v", i, err)
				}
				if mode != "reauth" {
					continue
				}
				// A later login passes the same barrier, so this replica has then applied every
				// revocation the SCIM writes above caused: the first session must have survived.
				tn.login(p)
				if v := tn.verify(b); v.Status != http.StatusOK {
					t.Errorf("round %d: reauth session built after the membership changes was revoked by them: /verify = %d", i, v.Status)
				}
			}
			// Logins with nothing of this IdP pending: what the barrier costs when it waits for nothing.
			p := tn.person("quiet", "Quiet", "Q")
			tn.must(tn.scim.CreateUser(ctx, p.User))
			tn.login(p)
			for range 5 {
				start := time.Now()
				tn.login(p)
				mu.Lock()
				idle = append(idle, time.Since(start))
				mu.Unlock()
			}
		})
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(took) == 0 {
			return
		}
		for _, c := range []struct {
			what string
			d    []time.Duration
		}{{"right after SCIM writes", took}, {"with nothing pending", idle}} {
			slices.Sort(c.d)
			q := func(f float64) time.Duration { return c.d[min(len(c.d)-1, int(f*float64(len(c.d))))] }
			t.Logf("login %s (whole browser flow, %d logins): p50 %s p99 %s", c.what, len(c.d), q(0.5), q(0.99))
		}
	})
}
