package reliability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/textproto"
	"sync/atomic"
	"testing"
	"time"
)

// requestID reads X-Request-Id from the start of an HTTP response.
func requestID(first []byte) string {
	r := bufio.NewReader(bytes.NewReader(first))
	if _, err := r.ReadString('\n'); err != nil {
		return ""
	}
	h, _ := textproto.NewReader(r).ReadMIMEHeader()
	return h.Get("X-Request-Id")
}

// waitPublished polls until scim-ingest's outbox is empty: every committed record, those of the
// write whose response is being held back included, has been acknowledged by JetStream.
func waitPublished(base string) error {
	return poll(context.Background(), 20*time.Second, func() error {
		v, err := metric(base, "scimflow_scim_ingest_outbox_depth")
		if err == nil && v != 0 {
			err = fmt.Errorf("outbox depth %v", v)
		}
		return err
	})
}

// TestKillBetweenAckAndResponse is P25: scim-ingest is SIGKILLed after it has committed a write and
// produced the HTTP response, before the IdP receives it. A proxy in front of scim-ingest holds back
// the first response bytes and kills the process; on odd rounds it first waits until JetStream has
// acknowledged the write's events — scim-ingest's outbox is empty — (so the kill falls exactly between JetStream's ack and the
// response reaching the IdP), on even rounds it kills at once (between the bbolt commit and the
// publish). The IdP's retry must be idempotent: a retried POST gets 409 and there is exactly one
// user; a retried PATCH changes nothing; a retried DELETE gets 404.
func TestKillBetweenAckAndResponse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	s := newStack(t, dir, stackOptions{natsURL: n.url()})
	nc, js := jsConnect(t, n.url())
	defer nc.Close()
	px := newProxy(t, s.ingest.addr)
	c := s.scim()
	c.base = "http://" + px.addr() + "/populations/" + s.idp.ID + "/scim/v2"
	w := newWorkload(c, "ackkill", 1)
	ctx := context.Background()

	rounds := iterations(4, 40)
	var kills, afterAck atomic.Int64
	var hookErrs []string // written by the proxy's goroutine, read after the write it intercepted
	arm := func(round int) {
		// The armed response must be the write's own, not a 503 of a service still starting.
		s.ingest.waitReady(t, 60*time.Second)
		px.armResponse(func(first []byte) {
			if round%2 == 1 && bytes.HasPrefix(first, []byte("HTTP/1.1 2")) {
				if err := waitPublished(s.ingest.metricsURL()); err != nil {
					hookErrs = append(hookErrs, fmt.Sprintf("round %d: events of request %s never acknowledged: %v", round, requestID(first), err))
				} else {
					afterAck.Add(1)
				}
			}
			s.ingest.kill(t)
			kills.Add(1)
			s.ingest.start(t)
		})
	}
	for round := range rounds {
		m := &userModel{UserName: fmt.Sprintf("ackkill-%d@example.com", round)}
		w.mu.Lock()
		w.users[m.UserName] = m
		w.order = append(w.order, m.UserName)
		w.mu.Unlock()
		before409 := w.status409.Load()
		arm(round)
		if !w.create(ctx, m, "g0") {
			t.Fatalf("round %d: create never acknowledged", round)
		}
		if w.status409.Load() != before409+1 {
			t.Errorf("round %d: the retried POST got no 409 (409s %d → %d)", round, before409, w.status409.Load())
		}
		if _, total, err := s.scim().findUser(ctx, m.UserName); err != nil || total != 1 {
			t.Errorf("round %d: %d users named %s after the retried POST, want 1 (%v)", round, total, m.UserName, err)
		}
		arm(round)
		if !w.patch(ctx, m, "g1") {
			t.Fatalf("round %d: patch never acknowledged", round)
		}
		if round%2 == 0 {
			arm(round)
			if !w.delete(ctx, m) {
				t.Fatalf("round %d: delete never acknowledged", round)
			}
		}
	}
	px.armResponse(nil)
	for _, e := range hookErrs {
		t.Error(e)
	}
	s.ingest.waitReady(t, 60*time.Second)
	f := s.verify(t, js, w, "ack-response-kill", time.Time{})
	t.Logf("FIGURES ack-response-kill: %d rounds, %d kills (%d after JetStream's ack), %d retries answered 409", rounds, kills.Load(), afterAck.Load(), w.status409.Load())
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("kill between ack and response: %s", f)
	}
}
