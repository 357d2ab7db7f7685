package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// scimClient speaks SCIM to one IdP's endpoint, as that IdP's provisioning client would.
type scimClient struct {
	base, secret string
	hc           *http.Client
}

// scimResp is the outcome of one SCIM request.
type scimResp struct {
	status     int
	reqID      string // X-Request-Id: the correlation id of the events the request caused
	retryAfter string
	body       []byte
	err        error // transport error (no status)
}

func (c *scimClient) do(ctx context.Context, method, path string, body any) scimResp {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return scimResp{err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return scimResp{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	if body != nil {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return scimResp{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return scimResp{status: resp.StatusCode, reqID: resp.Header.Get("X-Request-Id"), retryAfter: resp.Header.Get("Retry-After"), body: b, err: err}
}

func userBody(userName, given string) map[string]any {
	return map[string]any{
		"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": userName,
		"name":     map[string]any{"givenName": given, "familyName": "Reliability"},
		"emails":   []any{map[string]any{"value": userName, "type": "work", "primary": true}},
		"active":   true,
	}
}

func patchBody(path string, value any) map[string]any {
	return map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "path": path, "value": value}},
	}
}

// findUser returns the id of userName at scim-ingest ("" if none) and how many matched.
func (c *scimClient) findUser(ctx context.Context, userName string) (string, int, error) {
	q := url.Values{"filter": {fmt.Sprintf("userName eq %q", userName)}}
	r := c.do(ctx, http.MethodGet, "/Users?"+q.Encode(), nil)
	if r.err != nil || r.status != http.StatusOK {
		return "", 0, fmt.Errorf("GET /Users?filter = %d %v %s", r.status, r.err, r.body)
	}
	var lr struct {
		TotalResults int `json:"totalResults"`
		Resources    []struct {
			ID string `json:"id"`
		} `json:"Resources"`
	}
	if err := json.Unmarshal(r.body, &lr); err != nil {
		return "", 0, err
	}
	if len(lr.Resources) == 0 {
		return "", lr.TotalResults, nil
	}
	return lr.Resources[0].ID, lr.TotalResults, nil
}

// attempt is one HTTP attempt of a logical write, as the workload saw it.
type attempt struct {
	Op       string // create, patch, delete
	UserName string
	Status   int // 0: transport error
	ReqID    string
	Value    string
	Retry    bool // an earlier attempt of the same logical write got no definitive answer
}

// userModel is what the IdP believes about a user after its acknowledged writes.
type userModel struct {
	UserName string
	ID       string
	Given    string // last acknowledged givenName
	Deleted  bool
	// Uncertain is set when a write of this user was abandoned without a definitive answer; only
	// loss checks apply to it then.
	Uncertain bool
}

// workload drives SCIM writes from several workers and records every attempt and its result. Each
// user belongs to one worker, so its writes are sequential; a write without a definitive answer
// (transport error, 5xx, 429) is retried like an IdP would, and a retried create that gets 409 is
// resolved by a filter query (the first attempt committed).
type workload struct {
	c       *scimClient
	prefix  string
	workers int
	// opDeadline bounds the retries of one logical write.
	opDeadline time.Duration
	// pace is a pause between a worker's users (0: none), to keep a slow back end from building
	// an outbox backlog of many minutes.
	pace time.Duration

	mu       sync.Mutex // guards the following
	attempts []attempt
	users    map[string]*userModel
	order    []string
	abandon  int

	acked, transportErr, status5xx, status503, status429, missingRetryAfter, status409, other atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
}

func newWorkload(c *scimClient, prefix string, workers int) *workload {
	return &workload{c: c, prefix: prefix, workers: workers, opDeadline: 120 * time.Second, users: map[string]*userModel{}, stop: make(chan struct{})}
}

// start launches the workers; each writes users until stopped or maxUsers users are done.
func (w *workload) start(maxUsersPerWorker int) {
	for i := range w.workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.worker(i, maxUsersPerWorker)
		}()
	}
}

// finish stops the workers after their current logical write and waits for them.
func (w *workload) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// count returns the number of logical users created so far.
func (w *workload) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.users)
}

func (w *workload) worker(n, maxUsers int) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(time.Now().UnixNano())))
	for i := 0; i < maxUsers && !w.stopped(); i++ {
		name := fmt.Sprintf("%s-w%d-u%d@example.com", w.prefix, n, i)
		m := &userModel{UserName: name}
		w.mu.Lock()
		w.users[name] = m
		w.order = append(w.order, name)
		w.mu.Unlock()
		if !w.create(ctx, m, "g0") {
			continue
		}
		patches := 1 + rng.IntN(3)
		for j := 1; j <= patches; j++ {
			if !w.patch(ctx, m, "g"+strconv.Itoa(j)) {
				break
			}
		}
		if rng.IntN(4) == 0 {
			w.delete(ctx, m)
		}
		if w.pace > 0 {
			time.Sleep(w.pace)
		}
	}
}

// record counts one attempt and reports whether its answer is definitive.
func (w *workload) record(a attempt, r scimResp) {
	a.Status, a.ReqID = r.status, r.reqID
	w.mu.Lock()
	w.attempts = append(w.attempts, a)
	w.mu.Unlock()
	switch {
	case r.err != nil || r.status == 0:
		w.transportErr.Add(1)
	case r.status/100 == 2:
		w.acked.Add(1)
	case r.status == http.StatusServiceUnavailable:
		w.status503.Add(1)
		w.status5xx.Add(1)
		if r.retryAfter == "" {
			w.missingRetryAfter.Add(1)
		}
	case r.status/100 == 5:
		w.status5xx.Add(1)
	case r.status == http.StatusTooManyRequests:
		// Admission control (the pipeline lags) or the rate limit: retried after Retry-After.
		w.status429.Add(1)
		if r.retryAfter == "" {
			w.missingRetryAfter.Add(1)
		}
	case r.status == http.StatusConflict:
		w.status409.Add(1)
	default:
		w.other.Add(1)
	}
}

// retryable reports whether the IdP would retry this answer.
func retryable(r scimResp) bool {
	return r.err != nil || r.status == 0 || r.status/100 == 5 || r.status == http.StatusTooManyRequests
}

// backoff waits before a retry: Retry-After when given (at most 2 s), else a short random pause.
func backoff(r scimResp, n int) {
	d := time.Duration(50+rand.IntN(100)) * time.Millisecond * time.Duration(min(n, 10))
	if s, err := strconv.Atoi(r.retryAfter); err == nil && s > 0 {
		d = min(time.Duration(s)*time.Second, 2*time.Second)
	}
	time.Sleep(d)
}

func (w *workload) abandoned(m *userModel, why string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	m.Uncertain = true
	w.abandon++
	return false
}

func (w *workload) create(ctx context.Context, m *userModel, given string) bool {
	deadline := time.Now().Add(w.opDeadline)
	retried := false
	for n := 1; time.Now().Before(deadline); n++ {
		r := w.c.do(ctx, http.MethodPost, "/Users", userBody(m.UserName, given))
		w.record(attempt{Op: "create", UserName: m.UserName, Value: given, Retry: n > 1}, r)
		switch {
		case r.status == http.StatusCreated:
			var u struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(r.body, &u); err != nil || u.ID == "" {
				return w.abandoned(m, "create: no id")
			}
			w.mu.Lock()
			m.ID, m.Given = u.ID, given
			w.mu.Unlock()
			return true
		case r.status == http.StatusConflict && retried:
			// The IdP's retry of a create whose answer was lost: the first attempt committed.
			id, _, err := w.c.findUser(ctx, m.UserName)
			if err != nil || id == "" {
				return w.abandoned(m, "create: 409 but not found")
			}
			w.mu.Lock()
			m.ID, m.Given = id, given
			w.mu.Unlock()
			return true
		case retryable(r):
			retried = true
			backoff(r, n)
		default:
			return w.abandoned(m, fmt.Sprintf("create: %d %s", r.status, r.body))
		}
	}
	return w.abandoned(m, "create: deadline")
}

func (w *workload) patch(ctx context.Context, m *userModel, given string) bool {
	deadline := time.Now().Add(w.opDeadline)
	for n := 1; time.Now().Before(deadline); n++ {
		r := w.c.do(ctx, http.MethodPatch, "/Users/"+m.ID, patchBody("name.givenName", given))
		w.record(attempt{Op: "patch", UserName: m.UserName, Value: given, Retry: n > 1}, r)
		switch {
		case r.status/100 == 2:
			w.mu.Lock()
			m.Given = given
			w.mu.Unlock()
			return true
		case retryable(r):
			backoff(r, n)
		default:
			return w.abandoned(m, fmt.Sprintf("patch: %d %s", r.status, r.body))
		}
	}
	return w.abandoned(m, "patch: deadline")
}

func (w *workload) delete(ctx context.Context, m *userModel) bool {
	deadline := time.Now().Add(w.opDeadline)
	retried := false
	for n := 1; time.Now().Before(deadline); n++ {
		r := w.c.do(ctx, http.MethodDelete, "/Users/"+m.ID, nil)
		w.record(attempt{Op: "delete", UserName: m.UserName, Retry: n > 1}, r)
		switch {
		case r.status/100 == 2, r.status == http.StatusNotFound && retried:
			w.mu.Lock()
			m.Deleted = true
			w.mu.Unlock()
			return true
		case retryable(r):
			retried = true
			backoff(r, n)
		default:
			return w.abandoned(m, fmt.Sprintf("delete: %d %s", r.status, r.body))
		}
	}
	return w.abandoned(m, "delete: deadline")
}

// summary is the workload's figures for the log and docs/reliability.md.
func (w *workload) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("users=%d attempts=%d acked(2xx)=%d transport_errors=%d 5xx=%d (503=%d) 429=%d (503/429 without Retry-After=%d) 409=%d other=%d abandoned=%d",
		len(w.users), len(w.attempts), w.acked.Load(), w.transportErr.Load(), w.status5xx.Load(), w.status503.Load(), w.status429.Load(), w.missingRetryAfter.Load(), w.status409.Load(), w.other.Load(), w.abandon)
}

// merge adds o's users, attempts and counts to w (o must be finished).
func (w *workload) merge(o *workload) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, name := range o.order {
		w.users[name] = o.users[name]
		w.order = append(w.order, name)
	}
	w.attempts = append(w.attempts, o.attempts...)
	w.abandon += o.abandon
	for _, c := range [][2]*atomic.Int64{{&w.acked, &o.acked}, {&w.transportErr, &o.transportErr}, {&w.status5xx, &o.status5xx},
		{&w.status503, &o.status503}, {&w.status429, &o.status429}, {&w.missingRetryAfter, &o.missingRetryAfter}, {&w.status409, &o.status409}, {&w.other, &o.other}} {
		c[0].Add(c[1].Load())
	}
}
