package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimflow/scimflow/testkit/oidctest"
)

// browser is a person's browser at auth: a cookie jar, no automatic redirects.
type browser struct {
	auth string
	c    *http.Client
}

func newBrowser(auth string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{auth: auth, c: &http.Client{Jar: jar, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) get(u string) (*http.Response, string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "text/html")
	resp, err := b.c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(body), err
}

// login runs /login → provider /authorize (login_hint=sub) → /callback and reports whether a
// session cookie was set.
func (b *browser) login(idpID, sub string) error {
	resp, body, err := b.get(b.auth + "/login?" + url.Values{"idp_id": {idpID}}.Encode())
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusFound {
		return fmt.Errorf("GET /login = %d %s", resp.StatusCode, body)
	}
	authz, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	q := authz.Query()
	q.Set("login_hint", sub)
	authz.RawQuery = q.Encode()
	resp, body, err = b.get(authz.String())
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusFound {
		return fmt.Errorf("GET /authorize = %d %s", resp.StatusCode, body)
	}
	resp, body, err = b.get(resp.Header.Get("Location"))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusFound {
		return fmt.Errorf("GET /callback = %d %s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if strings.HasSuffix(c.Name, "scimflow_session") && c.Value != "" {
			return nil
		}
	}
	return fmt.Errorf("GET /callback set no session cookie")
}

// identity calls /get-identity: 200 while the session is valid, 401 once it is not, 503 when auth
// cannot know (fail closed). 0 is a transport error (auth down).
func (b *browser) identity() int {
	resp, _, err := b.get(b.auth + "/get-identity")
	if err != nil {
		return 0
	}
	return resp.StatusCode
}

// person provisions someone over SCIM (active) and at the provider, and logs them in.
func (s *stack) person(t testing.TB, name string) (*browser, string) {
	t.Helper()
	email := name + "@example.com"
	sub := "sub-" + name
	if err := s.provider.AddUser(oidctest.User{Sub: sub, Email: email, Name: name}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := s.scim().do(ctx, http.MethodPost, "/Users", userBody(email, name))
	if r.status != http.StatusCreated {
		t.Fatalf("create %s: %d %v %s", email, r.status, r.err, r.body)
	}
	var id struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(r.body, &id); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(s.auth.baseURL())
	if err := poll(ctx, 30*time.Second, func() error { return b.login(s.idp.ID, sub) }); err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	if err := poll(ctx, 30*time.Second, func() error {
		if st := b.identity(); st != http.StatusOK {
			return fmt.Errorf("/get-identity = %d", st)
		}
		return nil
	}); err != nil {
		t.Fatalf("session of %s: %v", email, err)
	}
	return b, id.ID
}

// deprovision sets active=false over SCIM (user_deprovision is on: sessions revoked, login locked).
func (s *stack) deprovision(t testing.TB, scimID string) {
	t.Helper()
	r := s.scim().do(context.Background(), http.MethodPatch, "/Users/"+scimID, patchBody("active", false))
	if r.status/100 != 2 {
		t.Fatalf("deprovision %s: %d %v %s", scimID, r.status, r.err, r.body)
	}
}

// TestRevocationAuthKilled is P24 under faults: a user is deprovisioned and auth is SIGKILLed at a
// random point shortly after (so the revocation may or may not have reached it), then restarted.
// From the restart on, the revoked session is never accepted; auth answers 503 or nothing until its
// revocation state is current, then 401 for the revoked session and 200 for an unrelated one. The
// time until that unrelated session works again is auth's unavailability.
func TestRevocationAuthKilled(t *testing.T) {
	t.Parallel()
	s, _, _ := singleStack(t, stackOptions{})
	control, _ := s.person(t, "control")
	rounds := iterations(3, 20)
	var worst, total time.Duration
	for i := range rounds {
		victim, id := s.person(t, fmt.Sprintf("victim%d", i))
		s.deprovision(t, id)
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // random kill point
		s.auth.kill(t)
		start := time.Now()
		s.auth.start(t)
		var accepted, polls int
		var back time.Duration
		err := poll(context.Background(), 60*time.Second, func() error {
			polls++
			v := victim.identity()
			if v == http.StatusOK {
				accepted++
			}
			c := control.identity()
			if v != http.StatusUnauthorized || c != http.StatusOK {
				return fmt.Errorf("victim %d, control %d", v, c)
			}
			back = time.Since(start)
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: auth did not recover: %v\n%s", i, err, s.auth.logTail(20))
		}
		if accepted > 0 {
			t.Errorf("round %d: the revoked session was accepted %d times after auth restarted", i, accepted)
		}
		worst, total = max(worst, back), total+back
		t.Logf("round %d: auth answered correctly %s after restart (%d polls, revoked session accepted %d times)", i, back.Round(time.Millisecond), polls, accepted)
	}
	t.Logf("FIGURES revocation-auth-killed: %d rounds, revoked session accepted 0 times after restart; auth unavailable after restart: mean %s, worst %s",
		rounds, (total / time.Duration(rounds)).Round(time.Millisecond), worst.Round(time.Millisecond))
}

// TestRevocationAuthPartitioned is R6 under a partition: auth reaches NATS through a proxy that
// cuts its connection (5 s; 30 s in the long run) while a user is deprovisioned. Auth must fail
// closed once its state is older than revocation_max_staleness (2 s here) — an unrelated session
// is refused too — and, once the revoked session has been refused, never accept it again. After
// the partition heals the revoked session gets 401 and the unrelated one 200.
func TestRevocationAuthPartitioned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	px := newProxy(t, fmt.Sprintf("127.0.0.1:%d", n.port))
	s := newStack(t, dir, stackOptions{natsURL: n.url(), authNATSURL: "nats://" + px.addr()})
	control, _ := s.person(t, "control")
	victim, id := s.person(t, "victim")
	partition := 5 * time.Second
	if long {
		partition = 30 * time.Second
	}
	cut := time.Now()
	px.block()
	s.deprovision(t, id)
	revoked := time.Now()

	var (
		victimRefused, victimAcceptedAfterRefusal, victimAcceptedBeforeRefusal int
		firstControlRefusal, controlBack, lastAccept                           time.Duration
		healed                                                                 time.Time
	)
	var timeline []string // status changes of the victim's session, for the failure message
	lastV := -1
	observe := func() (int, int) {
		v, c := victim.identity(), control.identity()
		if v != lastV {
			timeline = append(timeline, fmt.Sprintf("%s: %d", time.Since(cut).Round(time.Millisecond), v))
			lastV = v
		}
		// A refusal is auth's answer (401 revoked, 503 cannot know); a transport error (0) under
		// load is no answer at all.
		switch {
		case v == http.StatusUnauthorized || v == http.StatusServiceUnavailable:
			victimRefused++
		case v != http.StatusOK:
		case victimRefused > 0:
			victimAcceptedAfterRefusal++
		default:
			victimAcceptedBeforeRefusal++
			lastAccept = time.Since(revoked)
		}
		if (c == http.StatusUnauthorized || c == http.StatusServiceUnavailable) && firstControlRefusal == 0 {
			firstControlRefusal = time.Since(cut)
		}
		return v, c
	}
	// During the partition: observe continuously (a poll loop bounded by the partition's length).
	for time.Since(cut) < partition {
		observe()
		time.Sleep(20 * time.Millisecond)
	}
	if firstControlRefusal == 0 {
		t.Errorf("auth kept accepting sessions through a %s partition from NATS; it must fail closed after revocation_max_staleness (2s)", partition)
	}
	px.unblock()
	healed = time.Now()
	err := poll(context.Background(), 60*time.Second, func() error {
		v, c := observe()
		if v != http.StatusUnauthorized || c != http.StatusOK {
			return fmt.Errorf("victim %d, control %d", v, c)
		}
		controlBack = time.Since(healed)
		return nil
	})
	if err != nil {
		t.Fatalf("auth did not recover after the partition healed: %v\n%s", err, s.auth.logTail(20))
	}
	if victimAcceptedAfterRefusal > 0 {
		t.Errorf("the revoked session was accepted %d times after auth had refused it; victim status by time since the cut (healed at %s): %v",
			victimAcceptedAfterRefusal, healed.Sub(cut).Round(time.Millisecond), timeline)
	}
	unavailable := time.Since(cut) - firstControlRefusal - (time.Since(healed) - controlBack)
	t.Logf("FIGURES revocation-partition: partition %s; auth failed closed %s after the cut; unrelated sessions refused for %s (until %s after the heal); revoked session accepted %d times before auth refused it (the last %s after the revoking write) and %d times after",
		partition, firstControlRefusal.Round(time.Millisecond), unavailable.Round(time.Millisecond), controlBack.Round(time.Millisecond),
		victimAcceptedBeforeRefusal, lastAccept.Round(time.Millisecond), victimAcceptedAfterRefusal)
}
