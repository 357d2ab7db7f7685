package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/internal/scenario"
)

// waitTimeout bounds every wait for the asynchronous pipeline. It is a deadline for correctness on
// a loaded CI machine, not a latency assertion.
const waitTimeout = 20 * time.Second

// appURL is the protected application the forward-auth calls pretend to guard.
const appURL = "https://app.example.com/dashboard?tab=1"

// tenant is one IdP of a test case with its SCIM client.
type tenant struct {
	t        *testing.T
	e        *env
	ctx      context.Context
	slug     string
	idp      scenario.IdP
	scim     *scenario.SCIM
	behavior string
	userDep  bool
	seatDep  bool
}

// newTenant creates an IdP with the given policy through the admin API.
func newTenant(t *testing.T, e *env, slug string, d scenario.Dialect, behavior string, userDep, seatDep bool) *tenant {
	t.Helper()
	ctx := context.Background()
	slug += "-" + strings.ToLower(scenario.RandomString(6)) // unique under -count=N too
	spec := scenario.NewIdPSpec("e2e "+slug, e.op, e.secret, behavior, userDep, seatDep)
	idp, err := e.admin.CreateIdP(ctx, spec)
	if err != nil {
		t.Fatalf("CreateIdP(%s): %v", slug, err)
	}
	if idp.ID == "" || idp.SCIMConfig.Secret == "" {
		t.Fatalf("CreateIdP(%s) = %+v, want an id and the SCIM secret", slug, idp)
	}
	base := e.srv.ep.SCIM + "/populations/" + idp.ID + "/scim/v2"
	tn := &tenant{t: t, e: e, ctx: ctx, slug: slug, idp: idp, behavior: behavior, userDep: userDep, seatDep: seatDep,
		scim: &scenario.SCIM{BaseURL: base, Secret: idp.SCIMConfig.Secret, Dialect: d}}
	// The IdP reaches scim-ingest and auth through the idp_config bucket, asynchronously.
	if err := tn.scim.Ready(ctx, waitTimeout); err != nil {
		t.Fatalf("SCIM endpoint of the new IdP: %v", err)
	}
	if err := tn.browser().WaitIdP(ctx, idp.ID, waitTimeout); err != nil {
		t.Fatalf("auth does not know the new IdP: %v", err)
	}
	return tn
}

// email returns a per-tenant address, so tenants never share a user.
func (tn *tenant) email(local string) string {
	return local + "@" + tn.slug + ".example.com"
}

// person registers an account at the provider; it is not provisioned yet.
func (tn *tenant) person(local, given, family string) *scenario.Person {
	tn.t.Helper()
	p, err := scenario.NewPerson(tn.e.op, tn.email(local), given, family)
	if err != nil {
		tn.t.Fatal(err)
	}
	return p
}

func (tn *tenant) must(res scenario.Result, err error) scenario.Result {
	tn.t.Helper()
	if err != nil {
		tn.t.Fatal(err)
	}
	if res.RequestID == "" {
		tn.t.Fatalf("SCIM %s %s: no X-Request-Id in the response", res.Method, res.Path)
	}
	return res
}

func (tn *tenant) eventually(what string, check func() error) {
	tn.t.Helper()
	if err := scenario.Eventually(tn.ctx, waitTimeout, check); err != nil {
		tn.t.Fatalf("%s: %v", what, err)
	}
}

// browser returns a fresh browser for auth.
func (tn *tenant) browser() *scenario.Browser {
	return scenario.NewBrowser(tn.e.srv.ep.Auth, nil)
}

// login logs p in with a fresh browser and fails the test unless a session results.
func (tn *tenant) login(p *scenario.Person) *scenario.Browser {
	tn.t.Helper()
	b := tn.browser()
	r, err := b.Login(tn.ctx, tn.idp.ID, p.Sub)
	if err != nil {
		tn.t.Fatalf("login %s: %v", p.User.UserName, err)
	}
	if !r.OK() {
		tn.t.Fatalf("login %s: callback = %d %s, want 302 with a session", p.User.UserName, r.Status, r.Body)
	}
	return b
}

// loginEventually retries a login until it yields a session (auth learns of an unlock
// asynchronously).
func (tn *tenant) loginEventually(p *scenario.Person) *scenario.Browser {
	tn.t.Helper()
	var b *scenario.Browser
	tn.eventually("login of "+p.User.UserName, func() error {
		b = tn.browser()
		r, err := b.Login(tn.ctx, tn.idp.ID, p.Sub)
		if err != nil {
			return err
		}
		if !r.OK() {
			return fmt.Errorf("callback = %d %s", r.Status, r.Body)
		}
		return nil
	})
	return b
}

// verify calls /verify as nginx's auth_request does.
func (tn *tenant) verify(b *scenario.Browser) scenario.VerifyResult {
	tn.t.Helper()
	v, err := b.Verify(tn.ctx, scenario.Nginx, appURL)
	if err != nil {
		tn.t.Fatal(err)
	}
	return v
}

// waitVerify polls /verify until it answers status.
func (tn *tenant) waitVerify(what string, b *scenario.Browser, status int) scenario.VerifyResult {
	tn.t.Helper()
	var v scenario.VerifyResult
	tn.eventually(what, func() error {
		var err error
		v, err = b.Verify(tn.ctx, scenario.Nginx, appURL)
		if err != nil {
			return err
		}
		if v.Status != status {
			return fmt.Errorf("/verify = %d, want %d", v.Status, status)
		}
		return nil
	})
	return v
}

// wantVerify checks /verify answers status now (after a sync point).
func (tn *tenant) wantVerify(what string, b *scenario.Browser, status int) {
	tn.t.Helper()
	if v := tn.verify(b); v.Status != status {
		tn.t.Errorf("%s: /verify = %d, want %d", what, v.Status, status)
	}
}

// waitIdentity polls /get-identity until check accepts it.
func (tn *tenant) waitIdentity(what string, b *scenario.Browser, check func(scenario.SessionIdentity) error) scenario.SessionIdentity {
	tn.t.Helper()
	var id scenario.SessionIdentity
	tn.eventually(what, func() error {
		var status int
		var err error
		id, status, err = b.GetIdentity(tn.ctx)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("/get-identity = %d", status)
		}
		return check(id)
	})
	return id
}

// user polls the admin API until the registry has u and check accepts it.
func (tn *tenant) user(what, email string, check func(scenario.User) error) scenario.User {
	tn.t.Helper()
	var u scenario.User
	defer func() {
		if tn.t.Failed() {
			tn.t.Logf("last registry state of %s: %s", email, describeUser(u))
		}
	}()
	tn.eventually(what, func() error {
		var found bool
		var err error
		u, found, err = tn.e.admin.UserByEmail(tn.ctx, tn.idp.ID, email)
		if err != nil {
			return err
		}
		if !found {
			return errors.New("no such user in the registry yet")
		}
		if check == nil {
			return nil
		}
		return check(u)
	})
	return u
}

// history polls the user's history for the entry caused by the SCIM request reqID.
func (tn *tenant) history(email, reqID string) (scenario.User, scenario.HistoryEntry) {
	tn.t.Helper()
	var h scenario.HistoryEntry
	u := tn.user("history entry caused by SCIM request "+reqID, email, func(u scenario.User) error {
		for _, e := range u.History {
			if e.Cause == reqID {
				h = e
				return nil
			}
		}
		return fmt.Errorf("no history entry with cause %s among %d", reqID, len(u.History))
	})
	return u, h
}

// logRow polls the SCIM provisioning log for the row of request reqID.
func (tn *tenant) logRow(reqID string) scenario.LogRow {
	tn.t.Helper()
	var row scenario.LogRow
	tn.eventually("SCIM log row of request "+reqID, func() error {
		rows, err := tn.e.admin.SCIMLogs(tn.ctx, url.Values{"idp_id": {tn.idp.ID}, "limit": {"1000"}})
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.RequestID == reqID {
				row = r
				return nil
			}
		}
		return fmt.Errorf("not among %d rows", len(rows))
	})
	return row
}

// checkLog checks the log row of res: method, resource type, success, and the named user or group.
func (tn *tenant) checkLog(res scenario.Result, resourceType, email, group string) scenario.LogRow {
	tn.t.Helper()
	row := tn.logRow(res.RequestID)
	if !strings.EqualFold(row.RequestMethod, res.Method) || !strings.EqualFold(row.ResourceType, resourceType) ||
		!strings.EqualFold(row.Status, "SUCCESS") || row.HTTPStatus != res.Status {
		tn.t.Errorf("log row of %s %s = %+v, want method %s, type %s, SUCCESS, status %d", res.Method, res.Path, row, res.Method, resourceType, res.Status)
	}
	if email != "" && row.ResourceUserEmail != email {
		tn.t.Errorf("log row of %s %s: resource_user_email = %q, want %q", res.Method, res.Path, row.ResourceUserEmail, email)
	}
	if group != "" && !strings.EqualFold(row.ResourceGroupName, group) {
		tn.t.Errorf("log row of %s %s: resource_group_name = %q, want %q", res.Method, res.Path, row.ResourceGroupName, group)
	}
	return row
}

func hasNote(h scenario.HistoryEntry, sub string) bool {
	return slices.ContainsFunc(h.Notes, func(n string) bool { return strings.Contains(n, sub) })
}

func groupsAre(got []string, want ...string) error {
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		return fmt.Errorf("groups = %q, want %q", got, want)
	}
	return nil
}

func headerGroups(v scenario.VerifyResult) []string {
	h := v.Header.Get("X-Scimflow-Groups")
	if h == "" {
		return nil
	}
	return strings.Split(h, ",")
}

// describeUser renders a user and its history (oldest first) for a failure message.
func describeUser(u scenario.User) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s status=%s seat=%v locked=%v groups=%v sessions=%d\n", u.ID, u.Status, u.SeatHeld, u.Locked, u.Identity.GroupNames(), len(u.ActiveSessions))
	for i := len(u.History) - 1; i >= 0; i-- {
		h := u.History[i]
		fmt.Fprintf(&b, "  %s %s cause=%s changes=%v notes=%v seat=%v status=%s\n", h.At.Format("15:04:05.000000"), h.EventType, h.Cause, h.Changes, h.Notes, h.After.SeatHeld, h.After.Status)
	}
	return b.String()
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func ctx(t *testing.T) context.Context { return t.Context() }

// loginWithGroups logs p in until a session carries exactly the groups want. A login that races
// the SCIM change it should reflect never gets it (the known bug
// TestAutomaticGroupChangeReachesRacingLogin), so tests whose subject is something else retry the
// login instead of inheriting that race.
func (tn *tenant) loginWithGroups(p *scenario.Person, want ...string) *scenario.Browser {
	tn.t.Helper()
	var b *scenario.Browser
	tn.eventually(p.User.UserName+" logged in with groups "+strings.Join(want, ","), func() error {
		b = tn.login(p)
		return scenario.Eventually(tn.ctx, time.Second, func() error { return groupsAre(headerGroups(tn.verify(b)), want...) })
	})
	return b
}
