package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDiskFull fills scim-ingest's bbolt volume — a 2 MiB tmpfs mounted for the test (the suite
// runs as root; without mount permission the test is skipped) — under load. Writes that cannot be
// committed must fail (5xx), never be acknowledged and then lost; the process must survive or
// restart cleanly (it is also SIGKILLed and restarted while the disk is full); and once the volume is grown (remount) the IdP's retries succeed and both
// oracles hold.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	diskFull(t)
}

func diskFull(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "scim-ingest-volume")
	if err := os.MkdirAll(vol, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", vol).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the bbolt volume (%v: %s); see docs/reliability.md", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", vol).Run() })

	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	s := newStack(t, dir, stackOptions{natsURL: n.url(), dataDirs: map[string]string{"scim-ingest": vol}})
	nc, js := jsConnect(t, n.url())
	defer nc.Close()

	w := newWorkload(s.scim(), "diskfull", 4)
	w.start(1 << 20)
	// Poll until the volume is full: writes fail with 5xx (or scim-ingest died on it).
	var crashed bool
	if err := poll(t.Context(), 180*time.Second, func() error {
		if !s.ingest.running() {
			crashed = true
			return nil
		}
		if w.status5xx.Load()+w.transportErr.Load() < 20 {
			return fmt.Errorf("%d 5xx so far (%d users)", w.status5xx.Load(), w.count())
		}
		return nil
	}); err != nil {
		t.Fatalf("volume never filled: %v", err)
	}
	ackedFull := w.acked.Load()
	failedFull := w.status5xx.Load() + w.transportErr.Load()
	df, _ := exec.Command("df", "-k", vol).Output()
	t.Logf("volume full after %d acknowledged writes (%d failed answers); scim-ingest crashed: %v\n%s", ackedFull, failedFull, crashed, df)
	if crashed {
		t.Logf("scim-ingest exited on the full disk:\n%s", s.ingest.logTail(15))
	}
	// A crash while the disk is full: the file must still open (bbolt's two-phase commit leaves
	// no half-written transaction behind).
	s.ingest.kill(t)
	s.ingest.start(t)
	s.ingest.waitReady(t, 60*time.Second)
	if out, err := exec.Command("mount", "-o", "remount,size=256m", vol).CombinedOutput(); err != nil {
		t.Fatalf("grow the volume: %v %s", err, out)
	}
	grown := time.Now()
	target := w.acked.Load() + 40
	if err := poll(t.Context(), 120*time.Second, func() error {
		if w.acked.Load() < target {
			return fmt.Errorf("%d acknowledged, want %d", w.acked.Load(), target)
		}
		return nil
	}); err != nil {
		t.Fatalf("writes did not resume after the volume grew: %v\n%s", err, s.ingest.logTail(20))
	}
	w.finish()
	f := s.verify(t, js, w, "disk-full", grown)
	t.Logf("FIGURES disk-full: %d writes acknowledged before the volume filled, %d failed answers while full, scim-ingest crashed: %v; %s", ackedFull, failedFull, crashed, f)
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("disk full: %s", f)
	}
}

// TestDiskFullIdentityStore fills identity-store's bbolt volume (a 2 MiB tmpfs) while SCIM writes
// continue: scim-ingest keeps answering them (acknowledged, or 429 once admission control sees
// identity-store lag), identity-store cannot
// commit and must neither skip nor half-apply; it is SIGKILLed and restarted while full; once the
// volume grows it catches up and both oracles hold.
func TestDiskFullIdentityStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	vol := filepath.Join(dir, "identity-store-volume")
	if err := os.MkdirAll(vol, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", vol).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the bbolt volume (%v: %s); see docs/reliability.md", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", vol).Run() })
	n := newNATS(t, dir, "n1")
	n.startSingle(t)
	t.Cleanup(func() { n.kill(t) })
	s := newStack(t, dir, stackOptions{natsURL: n.url(), dataDirs: map[string]string{"identity-store": vol}})
	nc, js := jsConnect(t, n.url())
	defer nc.Close()

	w := newWorkload(s.scim(), "diskfull-store", 4)
	w.start(1 << 20)
	if err := poll(t.Context(), 180*time.Second, func() error {
		var st syscall.Statfs_t
		if err := syscall.Statfs(vol, &st); err != nil {
			return err
		}
		if free := st.Bavail * uint64(st.Bsize); free > 0 {
			return fmt.Errorf("%d bytes free", free)
		}
		return nil
	}); err != nil {
		t.Fatalf("volume never filled: %v", err)
	}
	full := time.Now()
	// While identity-store cannot apply, scim-ingest keeps answering: it acknowledges (its own disk
	// is fine) until the SCIM lag passes admission_max_lag, then refuses bulk writes with 429 and
	// Retry-After (docs/architecture.md, "Admission control"). Which of the two happens depends on
	// timing; both are correct, a 5xx or a lost write is not.
	waitAnswers(t, w, 20)
	ackedWhileFull := w.count()
	s.store.kill(t)
	s.store.start(t)
	// Restarted on the full disk: it either becomes ready or exits; which one is recorded.
	restarted := "up (serving /metrics)"
	if err := poll(t.Context(), 30*time.Second, func() error {
		if !s.store.running() {
			restarted = "exited: " + lastLine(s.store.logTail(3))
			return nil
		}
		_, err := metric(s.store.metricsURL(), "scimflow_identity_store_outbox_depth")
		return err
	}); err != nil {
		restarted = "neither ready nor exited: " + err.Error()
	}
	waitAnswers(t, w, 20)
	enospc := strings.Contains(s.store.logTail(400), "no space")
	atGrow := w.count()
	if out, err := exec.Command("mount", "-o", "remount,size=256m", vol).CombinedOutput(); err != nil {
		t.Fatalf("grow the volume: %v %s", err, out)
	}
	grown := time.Now()
	if !s.store.running() {
		s.store.start(t)
	}
	s.store.waitReady(t, 60*time.Second)
	waitUsers(t, w, w.count()+20)
	w.finish()
	f := s.verify(t, js, w, "disk-full-identity-store", grown)
	t.Logf("FIGURES disk-full-identity-store: volume full after %d users; SCIM kept answering (%d users by the time the volume grew, %s later); identity-store restarted while full: %s; logged ENOSPC: %v; %s",
		ackedWhileFull-20, atGrow, grown.Sub(full).Round(time.Millisecond), restarted, enospc, f)
	if f.Lost+f.Duplicated+f.Unexpected+f.StoredTwice > 0 {
		t.Errorf("disk full (identity-store): %s", f)
	}
}

// waitAnswers waits until scim-ingest answered n more writes with a 2xx or a 429 (with Retry-After,
// which the workload checks): the service keeps deciding, whether it admits the writes or not.
func waitAnswers(t testing.TB, w *workload, n int64) {
	t.Helper()
	answered := func() int64 { return w.acked.Load() + w.status429.Load() }
	want := answered() + n
	if err := poll(t.Context(), 120*time.Second, func() error {
		if got := answered(); got < want {
			return fmt.Errorf("%d writes answered with 2xx or 429, want %d", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
