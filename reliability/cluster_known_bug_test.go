//go:build reliability_known_bugs

package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/scimflow/scimflow/events"
)

// Known bug (2026-12-06): after the SCIM stream's leader is SIGKILLed and a node is partitioned
// away, identity-store's registry can miss one acknowledged write that IS in the SCIM stream
// (registry has 0 users for cluster-w2-u13@example.com, lost=1 of 2,102 acknowledged; seen once in
// two default runs, and 3 of 1,053 users in one of three compose cluster runs). It appeared after
// the outbox started putting a transaction's events in one message and the consumer learned batch
// messages and transaction caps; the cause is not diagnosed (docs/reliability.md). The scenario runs
// behind this tag until it is: go test -tags reliability_known_bugs -run TestClusterLeaderKillAndPartition ./reliability/

// TestClusterLeaderKillAndPartition is P13 on a 3-node cluster with R3 streams: under load, the SCIM
// stream's leader is SIGKILLed (and restarted), then one node is partitioned away by cutting its
// routes. A publish sent to the partitioned node must fail rather than be acknowledged without
// quorum; no acknowledged write may be lost; afterwards both oracles hold.
func TestClusterLeaderKillAndPartition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCluster(t, dir)
	ctx := context.Background()
	nc, js := jsConnect(t, c.url())
	defer nc.Close()
	if err := poll(ctx, 60*time.Second, func() error {
		_, err := js.AccountInfo(ctx)
		return err
	}); err != nil {
		t.Fatalf("JetStream cluster not up: %v", err)
	}
	s := newStack(t, dir, stackOptions{natsURL: c.url(), replicas: 3})
	if err := waitReplicasCurrent(ctx, js, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	w := newWorkload(s.scim(), "cluster", 4)
	w.pace = 50 * time.Millisecond
	w.start(1 << 20)
	waitUsers(t, w, 20)

	// Leader kills.
	var elections []time.Duration
	for i := range iterations(1, 5) {
		info, err := streamLeader(ctx, js, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		old := info.Cluster.Leader
		victim := c.nodes[c.index(old)]
		victim.kill(t)
		killed := time.Now()
		var leader string
		if err := poll(ctx, 60*time.Second, func() error {
			info, err := streamLeader(ctx, js, 2*time.Second)
			if err != nil {
				return err
			}
			if leader = info.Cluster.Leader; leader == old {
				return fmt.Errorf("leader still %s", old)
			}
			return nil
		}); err != nil {
			t.Fatalf("no new SCIM leader after killing %s: %v", old, err)
		}
		elections = append(elections, time.Since(killed))
		t.Logf("kill %d: SCIM leader %s SIGKILLed; %s leads after %s (%d users so far)", i+1, old, leader, time.Since(killed).Round(time.Millisecond), w.count())
		waitUsers(t, w, w.count()+10)
		victim.restart(t)
		if err := waitReplicasCurrent(ctx, js, 120*time.Second); err != nil {
			t.Fatalf("replicas not current after %s restarted: %v", old, err)
		}
	}

	// Partition one node.
	p := rand.IntN(3)
	partition := 5 * time.Second
	if long {
		partition = 30 * time.Second
	}
	c.partition(p, true)
	cut := time.Now()
	t.Logf("node %s partitioned away", c.nodes[p].name)
	// A publish through the minority node: without quorum it must fail, never be acknowledged.
	minority, err := nats.Connect(c.nodes[p].url(), nats.Name("reliability-minority"))
	if err != nil {
		t.Fatal(err)
	}
	defer minority.Close()
	mjs, err := jetstream.New(minority)
	if err != nil {
		t.Fatal(err)
	}
	probe := events.New(s.idp.ID, time.Now(), "minority-probe", "", events.SCIMLog{RequestID: "minority-probe", Method: "POST", Path: "/Users", ResourceType: "USER", Status: events.LogSuccess, HTTPStatus: 201})
	data, err := events.Marshal(probe)
	if err != nil {
		t.Fatal(err)
	}
	// Give the minority time to notice it lost its peers (a leader learns it only when its
	// heartbeats go unanswered), then probe repeatedly until the partition ends.
	var probes, probeAcked int
	var ackedIDs []string
	for time.Since(cut) < partition {
		probes++
		id := fmt.Sprintf("%s-%d", probe.ID, probes)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := mjs.Publish(pctx, probe.Subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			probeAcked++
			ackedIDs = append(ackedIDs, id)
		}
	}
	ackedDuring := w.acked.Load()
	c.partition(p, false)
	healed := time.Now()
	if err := waitReplicasCurrent(ctx, js, 120*time.Second); err != nil {
		t.Fatalf("replicas not current after the partition healed: %v", err)
	}
	t.Logf("partition of %s lasted %s; %d publishes through it, %d acknowledged; replicas current %s after healing",
		c.nodes[p].name, healed.Sub(cut).Round(time.Millisecond), probes, probeAcked, time.Since(healed).Round(time.Millisecond))
	waitUsers(t, w, w.count()+10)
	w.finish()
	f := s.verify(t, js, w, "cluster", healed)
	// Any acknowledged minority publish must really be in the stream (a false ack would not be).
	if probeAcked > 0 {
		msgs := readStream(t, js, events.StreamSCIM)
		have := map[string]bool{}
		for _, m := range msgs {
			have[m.MsgID] = true
		}
		for _, id := range ackedIDs {
			if !have[id] {
				f.Lost++
				t.Errorf("publish %s through the partitioned node was acknowledged but is not in the stream: a false ack", id)
			}
		}
	}
	t.Logf("FIGURES cluster: %d leader kills, new leader after %v; partition %s (node %s): %d/%d minority publishes acknowledged; %d writes acknowledged overall by then; %s",
		len(elections), roundAll(elections), partition, c.nodes[p].name, probeAcked, probes, ackedDuring, f)
	if f.Lost+f.Duplicated+f.Unexpected > 0 {
		t.Errorf("cluster: %s", f)
	}
}

func roundAll(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return out
}
