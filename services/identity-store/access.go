package identitystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/access"
	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
)

// Access applications (docs/access-policies.md). The admin API publishes each change as an
// identity.access.app.{id}.changed event; the identitystore-identity consumer applies it to
// bkAccessApps (so a replay of the streams rebuilds the apps, and the canonical dump covers them);
// appSync then mirrors bkAccessApps into the access_apps KV bucket that every auth replica watches.
// The bucket is a copy the syncer heals (at start, after each change and every appSyncEvery), never
// the source of truth. Access-log records arrive on the AUTH stream (auth.access.app.{id}.decided) and
// are kept in bkAccessLog with the SCIM log's retention.

// storedApp is a bkAccessApps value: the app as the admin API returns it and the id of the event that
// wrote it (the admin API compares it with the event it published, to tell a conflict from success).
type storedApp struct {
	App     json.RawMessage `json:"app"`
	EventID string          `json:"event_id"`
}

// accessRow is one access-log row, as GET /api/v1/logs/access returns it.
type accessRow struct {
	ID       string    `json:"id"`
	LoggedAt time.Time `json:"logged_at"`
	events.AccessDecided
}

// appSyncEvery bounds how long a KV bucket that drifted from the registry (an entry deleted by hand, a
// failed write) stays wrong when no change wakes the syncer.
const appSyncEvery = 30 * time.Second

// accessAppChanged applies an admin change. A change that would make the set of apps invalid (two
// admins creating apps on one domain at once) is not applied: the live and the replayed registry both
// skip it, and the admin API that published it answers 409.
func (p *projector) accessAppChanged(t *txn, d events.AccessAppChanged) error {
	if !events.ValidToken(d.AppID) {
		return permanent("access app change without a valid app id")
	}
	b := t.tx.Bucket([]byte(bkAccessApps))
	if d.Deleted {
		return b.Delete([]byte(d.AppID))
	}
	a, err := access.ParseApp(d.App)
	if err != nil {
		return permanent("access app %s: %v", d.AppID, err)
	}
	if a.ID != d.AppID {
		return permanent("access app %s: body names app %q", d.AppID, a.ID)
	}
	if probs := a.Validate(); len(probs) > 0 {
		return nil
	}
	others, err := loadApps(t.tx)
	if err != nil {
		return err
	}
	others = slices.DeleteFunc(others, func(o access.App) bool { return o.ID == a.ID })
	if probs := access.ValidateSet(append(others, a)); len(probs) > 0 {
		return nil
	}
	return putJSON(t.tx, bkAccessApps, []byte(d.AppID), storedApp{App: d.App, EventID: t.ev.ID})
}

func (p *projector) accessDecided(t *txn, d events.AccessDecided) error {
	row := accessRow{ID: t.ev.ID, LoggedAt: t.at(), AccessDecided: d}
	row.Email = normEmail(row.Email)
	if err := putJSON(t.tx, bkAccessLog, append(timeKey(t.at()), t.ev.ID...), row); err != nil {
		return err
	}
	return p.prune(t, bkAccessLog)
}

// prune drops log rows older than the retention, by event time, so a replay prunes exactly what the
// live store pruned.
func (p *projector) prune(t *txn, bucket string) error {
	if p.logRetention <= 0 {
		return nil
	}
	bound := timeKey(t.at().Add(-p.logRetention))
	c := t.tx.Bucket([]byte(bucket)).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], bound) < 0; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// loadApps returns every stored app, in id order.
func loadApps(tx *bolt.Tx) ([]access.App, error) {
	var out []access.App
	err := tx.Bucket([]byte(bkAccessApps)).ForEach(func(k, v []byte) error {
		var st storedApp
		if err := json.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("access app %s: %w", k, err)
		}
		var a access.App
		if err := json.Unmarshal(st.App, &a); err != nil {
			return fmt.Errorf("access app %s: %w", k, err)
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

func getApp(tx *bolt.Tx, id string) (access.App, string, bool, error) {
	var st storedApp
	ok, err := getJSON(tx, bkAccessApps, []byte(id), &st)
	if !ok || err != nil {
		return access.App{}, "", false, err
	}
	var a access.App
	if err := json.Unmarshal(st.App, &a); err != nil {
		return access.App{}, "", false, err
	}
	return a, st.EventID, true, nil
}

// kickAppSync wakes the syncer after a change committed; a pending wake-up is enough.
func (s *service) kickAppSync() {
	select {
	case s.appSyncKick <- struct{}{}:
	default:
	}
}

// runAppSync keeps the access_apps KV bucket equal to bkAccessApps until ctx ends. A failure (NATS
// down) is logged, counted and retried: auth replicas keep the apps they had meanwhile.
func (s *service) runAppSync(ctx context.Context) error {
	t := time.NewTicker(appSyncEvery)
	defer t.Stop()
	backoff := time.Second
	for {
		err := s.syncApps(ctx)
		if err != nil && ctx.Err() == nil {
			s.d.Log().Warn("access_apps bucket not in step with the registry; retrying", "err", err)
			s.appSyncFailures.Add(1)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		select {
		case <-ctx.Done():
			return nil
		case <-s.appSyncKick:
		case <-t.C:
		}
	}
}

func (s *service) syncApps(ctx context.Context) error {
	want := map[string][]byte{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bkAccessApps)).ForEach(func(k, v []byte) error {
			var st storedApp
			if err := json.Unmarshal(v, &st); err != nil {
				return err
			}
			want[string(k)] = slices.Clone(st.App)
			return nil
		})
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := s.d.JS.KeyValue(cctx, broker.KVAccessApps)
	if err != nil {
		return err
	}
	keys, err := kv.Keys(cctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	for _, k := range keys {
		if _, ok := want[k]; !ok {
			if err := kv.Delete(cctx, k); err != nil {
				return fmt.Errorf("delete %s: %w", k, err)
			}
		}
	}
	for k, v := range want {
		e, err := kv.Get(cctx, k)
		if err == nil && bytes.Equal(e.Value(), v) {
			continue
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			return err
		}
		if _, err := kv.Put(cctx, k, v); err != nil {
			return fmt.Errorf("put %s: %w", k, err)
		}
	}
	return nil
}

// testResult is one person's decision in the tester.
type testResult struct {
	UserID   string `json:"user_id,omitempty"`
	Email    string `json:"email"`
	IdPID    string `json:"idp_id,omitempty"`
	Found    bool   `json:"found"`
	Decision string `json:"decision"` // allow or deny
	Reason   string `json:"reason"`   // deciding policy, no_policy, idp_not_allowed, inactive, locked, not_in_registry
	Policy   string `json:"policy,omitempty"`
}

// Reasons the tester gives for people whose next login would fail before any policy is read.
const (
	testInactive      = "inactive" // deprovisioned by SCIM: the next login is refused
	testLocked        = "locked"
	testNotInRegistry = "not_in_registry"
)

// tester evaluates one app for registry users, reusing its buffers from one person to the next.
type tester struct {
	c      *access.Compiled
	path   string
	claims bool // the app reads claims: decode them
	ai     accessIdent
	id     access.Identity
}

// decide evaluates the identity a user's next login would get (bkAccessIdent): the registry email
// and IdP, the SCIM groups where SCIM knows the person (else the last login's groups), the last
// login's oidc_fields.
func (t *tester) decide(uid, v []byte) (testResult, error) {
	if err := decodeAccessIdent(v, &t.ai); err != nil {
		return testResult{}, fmt.Errorf("user %s: %w", uid, err)
	}
	u := &t.ai
	r := testResult{UserID: string(uid), Email: u.email, IdPID: u.idp, Found: true, Decision: access.Deny}
	switch {
	case u.deprovisioned:
		r.Reason = testInactive
		return r, nil
	case u.locked:
		r.Reason = testLocked
		return r, nil
	case !t.c.IdPAllowed(u.idp):
		r.Reason = access.ReasonIdPNotAllowed
		return r, nil
	}
	var claims map[string]any
	if t.claims && len(u.claims) > 0 {
		if err := json.Unmarshal(u.claims, &claims); err != nil {
			return testResult{}, fmt.Errorf("user %s: claims: %w", uid, err)
		}
	}
	t.id.Reset(u.email, u.idp, u.groups, claims)
	res := t.c.Decide(t.path, noAddr, &t.id)
	r.Decision, r.Reason = res.Decision, res.Reason
	if res.Policy != nil {
		r.Policy = res.Policy.Name
	}
	return r, nil
}

// testSummary counts the decisions of a whole-registry test.
type testSummary struct {
	Users    int            `json:"users"`
	Allowed  int            `json:"allowed"`
	Denied   int            `json:"denied"`
	ByReason map[string]int `json:"by_reason"`
}

// testReport is the tester's answer.
type testReport struct {
	AppID   string       `json:"app_id,omitempty"`
	Path    string       `json:"path"`
	Summary testSummary  `json:"summary"`
	Users   []testResult `json:"users,omitempty"`
}

// testApp evaluates c for the listed emails (every IdP's user with that email), or for every user of
// the registry when emails is empty (summary only).
func (s *service) testApp(c *access.Compiled, emails []string, path string) (testReport, error) {
	rep := testReport{AppID: c.App.ID, Path: path, Summary: testSummary{ByReason: map[string]int{}}}
	count := func(r testResult) {
		rep.Summary.Users++
		if r.Decision == access.Allow {
			rep.Summary.Allowed++
		} else {
			rep.Summary.Denied++
		}
		rep.Summary.ByReason[r.Reason]++
	}
	t := &tester{c: c, path: path, claims: c.ReadsClaims()}
	err := s.db.View(func(tx *bolt.Tx) error {
		idents := tx.Bucket([]byte(bkAccessIdent))
		if len(emails) == 0 {
			return idents.ForEach(func(k, v []byte) error {
				r, err := t.decide(k, v)
				if err == nil {
					count(r)
				}
				return err
			})
		}
		rep.Users = []testResult{}
		for _, e := range emails {
			e = normEmail(e)
			found := false
			err := prefixScan(tx, bkEmail, key(e, ""), func(_, uid []byte) error {
				v := idents.Get(uid)
				if v == nil {
					return nil
				}
				r, err := t.decide(uid, v)
				if err != nil {
					return err
				}
				found = true
				count(r)
				rep.Users = append(rep.Users, r)
				return nil
			})
			if err != nil {
				return err
			}
			if !found {
				r := testResult{Email: e, Decision: access.Deny, Reason: testNotInRegistry}
				count(r)
				rep.Users = append(rep.Users, r)
			}
		}
		return nil
	})
	return rep, err
}

// appView is an app as the admin API returns it.
func appList(tx *bolt.Tx) ([]access.App, error) {
	apps, err := loadApps(tx)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(apps, func(a, b access.App) int {
		if c := strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return apps, nil
}
