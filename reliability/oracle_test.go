package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// streamMsg is one message read back from a stream.
type streamMsg struct {
	Seq     uint64
	Subject string
	MsgID   string
	Event   events.Event
	Err     error // decode error
}

// jsConnect connects the test to NATS (comma-separated URLs allowed).
func jsConnect(t testing.TB, natsURL string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts := []nats.Option{nats.Name("reliability-test"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	// A user in the URL is a scimflow role (the compose stack's NATS has permissions on): replies
	// must come under the role's inbox prefix, the only one it may subscribe to.
	first, _, _ := strings.Cut(natsURL, ",")
	if u, err := url.Parse(first); err == nil && u.User != nil {
		opts = append(opts, nats.CustomInboxPrefix("_INBOX."+u.User.Username()))
	}
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// readStream reads a whole stream, in order, with an ordered consumer.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []streamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer on %s: %v", stream, err)
	}
	var out []streamMsg
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			// Transient right after a leader change or a healed partition; retried until ctx ends.
			if ctx.Err() != nil {
				t.Fatalf("fetch %s: %v", stream, err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			// One streamMsg per event: a batch message holds several.
			evs, derr := events.DecodeMessage(m.Subject(), m.Data())
			if derr != nil {
				evs = []events.Event{{}}
			}
			for _, ev := range evs {
				out = append(out, streamMsg{Seq: md.Sequence.Stream, Subject: m.Subject(), MsgID: m.Headers().Get("Nats-Msg-Id"), Event: ev, Err: derr})
			}
			if md.Sequence.Stream >= last {
				return out
			}
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) && ctx.Err() != nil {
			t.Fatalf("fetch %s: %v", stream, batch.Error())
		}
		if ctx.Err() != nil {
			t.Fatalf("reading %s: stopped at %d of %d", stream, len(out), last)
		}
		_ = n
	}
}

// lastSeq returns a stream's last sequence.
func lastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// waitDrained polls until both outboxes are empty and identity-store's three cursors equal the last
// sequences of their streams — twice in a row, since identity-store's own IDENTITY events move the
// target. It returns how long that took.
func (s *stack) waitDrained(t testing.TB, js jetstream.JetStream, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := context.Background()
	stable := 0
	var dead *service
	err := poll(ctx, d, func() error {
		for _, sv := range []*service{s.ingest, s.store} {
			if !sv.running() {
				dead = sv
				return nil
			}
		}
		for _, c := range []struct {
			base, name string
		}{{s.ingest.metricsURL(), "scimflow_scim_ingest_outbox_depth"}, {s.store.metricsURL(), "scimflow_identity_store_outbox_depth"},
			{s.ingest.metricsURL(), "scimflow_scim_ingest_outbox_priority_depth"}, {s.store.metricsURL(), "scimflow_identity_store_outbox_priority_depth"}} {
			v, err := metric(c.base, c.name)
			if err != nil {
				stable = 0
				return err
			}
			if v != 0 {
				stable = 0
				return fmt.Errorf("%s = %v", c.name, v)
			}
		}
		for _, c := range []struct{ stream, durable string }{
			{events.StreamSCIM, "identitystore-scim"}, {events.StreamAuth, "identitystore-auth"}, {events.StreamIdentity, "identitystore-identity"},
			{events.StreamSCIMPriority, "identitystore-scim-priority"},
		} {
			tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			last, err := lastSeq(tctx, js, c.stream)
			cancel()
			if err != nil {
				stable = 0
				return err
			}
			cur, err := metric(s.store.metricsURL(), "scimflow_identity_store_consumer_cursor_sequence", `consumer="`+c.durable+`"`)
			if err != nil {
				stable = 0
				return err
			}
			if uint64(cur) != last {
				stable = 0
				return fmt.Errorf("%s cursor %v, stream %s last %d", c.durable, cur, c.stream, last)
			}
		}
		stable++
		if stable < 2 {
			return errors.New("once")
		}
		return nil
	})
	if dead != nil {
		err, _ := dead.waitExit(0)
		t.Fatalf("%s exited (%v) while the pipeline drained:\n%s", dead.svc, err, dead.logTail(40))
	}
	if err != nil {
		// The server's view of identity-store's consumers, then goroutine dumps (SIGQUIT) into the
		// service logs, kept because the test fails.
		for _, c := range []struct{ stream, durable string }{
			{events.StreamSCIM, "identitystore-scim"}, {events.StreamAuth, "identitystore-auth"}, {events.StreamIdentity, "identitystore-identity"},
		} {
			tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if cons, cerr := js.Consumer(tctx, c.stream, c.durable); cerr != nil {
				t.Logf("consumer %s: %v", c.durable, cerr)
			} else if info, cerr := cons.Info(tctx); cerr != nil {
				t.Logf("consumer %s info: %v", c.durable, cerr)
			} else {
				b, _ := json.Marshal(info)
				t.Logf("consumer %s info: %s", c.durable, b)
			}
			cancel()
		}
		for _, sv := range []*service{s.ingest, s.store} {
			sv.signal(t, syscall.SIGQUIT)
		}
		t.Fatalf("pipeline did not drain within %s: %v (goroutine dumps of scim-ingest and identity-store are in their logs)", d, err)
	}
	return time.Since(start)
}

// figures are the outcome counts of a run, Jepsen-style.
type figures struct {
	Acked      int // 2xx write attempts
	Lost       int // acknowledged writes missing from the stream or the registry
	Duplicated int // events applied more than once
	// StoredTwice counts events stored twice in the SCIM stream. JetStream deduplicates a relay retry
	// by Nats-Msg-Id, but in a cluster it clears in-flight ids on a leader change, so a retry across a
	// leader change can be stored twice; consumers then skip the second copy by event id
	// (internal/consumer, …_consumer_duplicates_total). Zero is required on one node.
	StoredTwice int
	Unexpected  int // events or registry users never attempted
	// Reordered counts events stored after an event of a later scim-ingest commit (first copies
	// only): the stream must hold the commits in the order they were made, because every projection
	// applies it in stream order and a rebuild must reproduce live apply.
	Reordered int
}

func (f figures) String() string {
	return fmt.Sprintf("acked=%d lost=%d duplicated=%d unexpected=%d stored_twice=%d reordered=%d", f.Acked, f.Lost, f.Duplicated, f.Unexpected, f.StoredTwice, f.Reordered)
}

// checkStream is oracle (1), stream half. Every acknowledged write has its provisioning-log record in
// the SCIM stream (scimlog, by request id, with the status the IdP saw) and its effect: an event with
// the request's correlation id, or — for the retry of a write whose first answer was lost, which
// then changes nothing — an earlier event of that user carrying the written value. No event is
// stored twice (by event id), each user was created once, and no user event names a user the
// workload never wrote.
func checkStream(t testing.TB, w *workload, msgs []streamMsg) figures {
	t.Helper()
	var f figures
	byCorr := map[string]int{}
	logged := map[string]int{} // request id -> HTTP status in the provisioning log
	seenID := map[string]int{}
	created := map[string]int{}
	givens := map[string]map[string]bool{} // user name -> given names in upserted events
	deleted := map[string]bool{}
	var maxCommit uint64
	var maxSeq uint64
	for _, m := range msgs {
		if m.Err != nil {
			continue
		}
		seenID[m.Event.ID]++
		if seenID[m.Event.ID] == 2 {
			f.StoredTwice++
			t.Logf("event %s stored twice in SCIM (second at seq %d)", m.Event.ID, m.Seq)
		}
		if seenID[m.Event.ID] == 1 && m.Event.Commit != 0 {
			if m.Event.Commit < maxCommit {
				if f.Reordered++; f.Reordered <= 5 {
					t.Errorf("SCIM seq %d (msg %s): event %s %s of commit %d stored after commit %d (seq %d): the stream is out of commit order",
						m.Seq, m.MsgID, m.Event.ID, m.Event.Type, m.Event.Commit, maxCommit, maxSeq)
				}
			} else {
				maxCommit, maxSeq = m.Event.Commit, m.Seq
			}
		}
		var userName string
		switch p := m.Event.Data.(type) {
		case events.SCIMLog:
			logged[p.RequestID] = p.HTTPStatus
			continue
		case events.SCIMUserUpserted:
			userName = p.UserName
			if p.Created {
				created[strings.ToLower(p.UserName)]++
			}
			if givens[userName] == nil {
				givens[userName] = map[string]bool{}
			}
			givens[userName][p.Name.GivenName] = true
		case events.SCIMUserDeleted:
			userName = p.UserName
			deleted[userName] = true
		default:
			continue
		}
		byCorr[m.Event.CorrelationID]++
		w.mu.Lock()
		_, known := w.users[userName]
		w.mu.Unlock()
		if !known {
			f.Unexpected++
			t.Errorf("SCIM event %s (seq %d) is about %q, which the workload never wrote", m.Event.ID, m.Seq, userName)
		}
	}
	if f.Reordered > 5 {
		t.Errorf("%d events in all stored out of commit order", f.Reordered)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.attempts {
		if a.Status/100 != 2 {
			continue
		}
		f.Acked++
		if st, ok := logged[a.ReqID]; !ok || st != a.Status {
			f.Lost++
			t.Errorf("acknowledged %s of %s (request %s, %d): provisioning-log record %v (status %d) in the SCIM stream", a.Op, a.UserName, a.ReqID, a.Status, ok, st)
			continue
		}
		if byCorr[a.ReqID] > 0 {
			continue
		}
		noop := a.Retry && ((a.Op == "delete" && deleted[a.UserName]) || (a.Op != "delete" && givens[a.UserName][a.Value]))
		if !noop {
			f.Lost++
			t.Errorf("acknowledged %s of %s (request %s, %d, retry %v) has no event in the SCIM stream", a.Op, a.UserName, a.ReqID, a.Status, a.Retry)
		}
	}
	for name, n := range created {
		if n > 1 {
			f.Duplicated += n - 1
			t.Errorf("user %s created %d times in the SCIM stream", name, n)
		}
	}
	return f
}

// registryUser is the part of GET /api/v1/users/{id} the oracle reads.
type registryUser struct {
	ID     string `json:"id"`
	Email  string `json:"email"`
	Status string `json:"status"`
	SCIM   *struct {
		UserID  string      `json:"user_id"`
		Name    events.Name `json:"name"`
		Active  bool        `json:"active"`
		Deleted bool        `json:"deleted"`
	} `json:"scim"`
	History []struct {
		EventID string `json:"event_id"`
	} `json:"history"`
}

// checkRegistry is oracle (1), registry half: every user the workload wrote is in the registry once,
// with the last acknowledged state; no unknown users; no history row (one per applied event) twice.
// It also checks scim-ingest's own answer for each user.
func (s *stack) checkRegistry(t testing.TB, w *workload, f *figures) {
	t.Helper()
	ctx := context.Background()
	var all []struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	}
	for page := 1; page < 1000; page++ {
		var rows []struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		}
		q := url.Values{"idp_id": {s.idp.ID}, "per_page": {"1000"}, "page": {fmt.Sprint(page)}}
		if _, err := s.admin(ctx, http.MethodGet, "/api/v1/users?"+q.Encode(), nil, &rows); err != nil {
			t.Fatalf("list users: %v", err)
		}
		all = append(all, rows...)
		if len(rows) < 1000 {
			break
		}
	}
	byEmail := map[string][]string{}
	for _, r := range all {
		byEmail[r.Email] = append(byEmail[r.Email], r.ID)
	}
	w.mu.Lock()
	users := make([]userModel, 0, len(w.users))
	for _, name := range w.order {
		users = append(users, *w.users[name])
	}
	w.mu.Unlock()
	known := map[string]bool{}
	sc := s.scim()
	for _, m := range users {
		email := strings.ToLower(m.UserName)
		known[email] = true
		ids := byEmail[email]
		if m.ID == "" && len(ids) == 0 {
			continue // never created (abandoned before any commit)
		}
		if len(ids) != 1 {
			f.Lost += boolInt(len(ids) == 0)
			f.Duplicated += max(len(ids)-1, 0)
			t.Errorf("registry has %d users for %s, want 1", len(ids), email)
			continue
		}
		var u registryUser
		if _, err := s.admin(ctx, http.MethodGet, "/api/v1/users/"+ids[0]+"?history_limit=10000", nil, &u); err != nil {
			t.Fatalf("get user: %v", err)
		}
		seen := map[string]bool{}
		for _, h := range u.History {
			if h.EventID != "" && seen[h.EventID] {
				f.Duplicated++
				t.Errorf("registry user %s: event %s applied twice (two history rows)", email, h.EventID)
			}
			seen[h.EventID] = true
		}
		if m.Uncertain {
			continue
		}
		switch {
		case u.SCIM == nil:
			f.Lost++
			t.Errorf("registry user %s has no SCIM state", email)
		case u.SCIM.UserID != m.ID:
			t.Errorf("registry user %s: scim user_id %s, want %s", email, u.SCIM.UserID, m.ID)
		case m.Deleted && (!u.SCIM.Deleted || u.Status != "inactive"):
			f.Lost++
			t.Errorf("registry user %s: deleted=%v status=%s, want the acknowledged DELETE (deleted, inactive)", email, u.SCIM.Deleted, u.Status)
		case !m.Deleted && (u.SCIM.Deleted || u.SCIM.Name.GivenName != m.Given):
			f.Lost++
			t.Errorf("registry user %s: given name %q deleted=%v, want the last acknowledged %q", email, u.SCIM.Name.GivenName, u.SCIM.Deleted, m.Given)
		}
		r := sc.do(ctx, http.MethodGet, "/Users/"+m.ID, nil)
		switch {
		case m.Deleted && r.status != http.StatusNotFound:
			t.Errorf("scim-ingest GET /Users/%s (%s) = %d, want 404 after the acknowledged DELETE", m.ID, email, r.status)
		case !m.Deleted && r.status != http.StatusOK:
			t.Errorf("scim-ingest GET /Users/%s (%s) = %d %v, want 200", m.ID, email, r.status, r.err)
		case !m.Deleted && !bytes.Contains(r.body, []byte(`"givenName":"`+m.Given+`"`)):
			t.Errorf("scim-ingest user %s = %s, want givenName %s", email, r.body, m.Given)
		}
	}
	for email := range byEmail {
		if !known[email] {
			f.Unexpected++
			t.Errorf("registry has user %s, which the workload never wrote", email)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// replayOracle is oracle (2): with every service stopped, `scimflow replay identity-store` rebuilds
// the registry from the streams into a fresh file, and its canonical dump must equal the live file's.
func (s *stack) replayOracle(t testing.TB, tag string) {
	t.Helper()
	for _, sv := range s.services() {
		sv.stop(t)
	}
	out := filepath.Join(s.dir, "replay-"+tag+".db")
	tmp := filepath.Join(s.dir, "replay-"+tag+"-data")
	cmd := exec.Command(scimflowBin, "replay", "identity-store", "-out", out, "-config", "/dev/null")
	cmd.Env = append(os.Environ(), "SCIMFLOW_NATS_URL="+s.opts.natsURL, "SCIMFLOW_DATA_DIR="+tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scimflow replay identity-store: %v\n%s", err, b)
	}
	live := dump(t, filepath.Join(s.store.dataDir, "identity-store.db"))
	rebuilt := dump(t, out)
	if live != rebuilt {
		lp, rp := filepath.Join(s.dir, "dump-live-"+tag+".txt"), filepath.Join(s.dir, "dump-replay-"+tag+".txt")
		os.WriteFile(lp, []byte(live), 0o600)
		os.WriteFile(rp, []byte(rebuilt), 0o600)
		// Keep the evidence: both dumps and a listing of the SCIM stream.
		keep := keepDir(t)
		os.WriteFile(filepath.Join(keep, "dump-live.txt"), []byte(live), 0o600)
		os.WriteFile(filepath.Join(keep, "dump-replay.txt"), []byte(rebuilt), 0o600)
		nc, js := jsConnect(t, s.opts.natsURL)
		var b strings.Builder
		for _, m := range readStream(t, js, events.StreamSCIM) {
			fmt.Fprintf(&b, "%d %s %s %s %s %v\n", m.Seq, m.MsgID, m.Event.ID, m.Event.Type, m.Subject, m.Err)
		}
		nc.Close()
		os.WriteFile(filepath.Join(keep, "stream-SCIM.txt"), []byte(b.String()), 0o600)
		t.Errorf("identity-store file differs from a clean replay of the streams (dumps and a stream listing kept in %s):\n%s", keep, firstDiff(live, rebuilt))
	}
}

func dump(t testing.TB, path string) string {
	t.Helper()
	b, err := exec.Command(scimflowBin, "replay", "dump", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("scimflow replay dump %s: %v\n%s", path, err, ee.Stderr)
		}
		t.Fatalf("scimflow replay dump %s: %v", path, err)
	}
	return string(b)
}

// firstDiff describes the first lines where two dumps differ, and the line counts.
func firstDiff(a, b string) string {
	al, bl := lines(a), lines(b)
	var out []string
	out = append(out, fmt.Sprintf("live %d lines, replay %d lines", len(al), len(bl)))
	for i := 0; i < max(len(al), len(bl)) && len(out) < 6; i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n  live:   %.300s\n  replay: %.300s", i+1, x, y))
		}
	}
	return strings.Join(out, "\n")
}

func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// verify runs both oracles after a workload: drain, stream check, registry check, replay. It logs
// and returns the figures.
//
// faultEnd is when the last fault ended (zero: now); the drain time is reported from it.
func (s *stack) verify(t testing.TB, js jetstream.JetStream, w *workload, tag string, faultEnd time.Time) figures {
	t.Helper()
	s.waitDrained(t, js, 120*time.Second)
	if faultEnd.IsZero() {
		faultEnd = time.Now()
	}
	drain := time.Since(faultEnd)
	msgs := readStream(t, js, events.StreamSCIM)
	f := checkStream(t, w, msgs)
	checkPriorityLane(t, msgs, readStream(t, js, events.StreamSCIMPriority))
	s.checkRegistry(t, w, &f)
	// The checker's own GETs are SCIM requests too, each with a provisioning-log event: let
	// identity-store apply them before it is stopped for the replay comparison.
	s.waitDrained(t, js, 120*time.Second)
	t.Logf("FIGURES %s: %s; %s; everything drained %s after the fault ended", tag, f, w.summary(), drain.Round(time.Millisecond))
	s.replayOracle(t, tag)
	return f
}

// keepDir is where a failed test keeps its evidence (service logs, dumps).
func keepDir(t testing.TB) string {
	keep := filepath.Join(os.TempDir(), "scimflow-reliability-logs", strings.ReplaceAll(t.Name(), "/", "_"))
	os.MkdirAll(keep, 0o750)
	return keep
}

// checkPriorityLane is the lanes' oracle: a write's events on both lanes commit in one scim-ingest
// transaction, so whatever was killed between publishing one lane and the other, every security fact
// in SCIM (a user set inactive, a user deleted) has its copy in SCIM_PRIORITY — same id, same commit
// number — and SCIM_PRIORITY holds nothing that SCIM does not.
func checkPriorityLane(t testing.TB, scim, prio []streamMsg) {
	t.Helper()
	ordered := map[string]events.Event{}
	for _, m := range scim {
		if m.Err == nil {
			ordered[m.Event.ID] = m.Event
		}
	}
	copies := map[string]bool{}
	for _, m := range prio {
		if m.Err != nil {
			t.Errorf("SCIM_PRIORITY seq %d does not decode: %v", m.Seq, m.Err)
			continue
		}
		copies[m.Event.ID] = true
		if o, ok := ordered[m.Event.ID]; !ok || o.Commit != m.Event.Commit {
			t.Errorf("SCIM_PRIORITY event %s (%s, commit %d) has no identical event in SCIM", m.Event.ID, m.Event.Type, m.Event.Commit)
		}
	}
	for id, e := range ordered {
		fact := false
		switch d := e.Data.(type) {
		case events.SCIMUserDeleted:
			fact = true
		case events.SCIMUserUpserted:
			fact = !d.Active && !d.Created
		}
		if fact && !copies[id] {
			t.Errorf("security fact %s (%s) in SCIM has no copy in SCIM_PRIORITY", id, e.Type)
		}
	}
	t.Logf("priority lane: %d copies, all matching SCIM", len(copies))
}
