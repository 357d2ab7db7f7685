package auth

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/testkit/natstest"
)

// testKEK is the key-encryption key the harness's replicas share.
var testKEK = NewKeyEncryptionKey()

func keysBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	srv := natstest.StartBare(t)
	_, js := srv.Connect("kek-test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: KVKeys, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func ring(t *testing.T, keys ...string) *kekRing {
	t.Helper()
	r, err := parseKEKs(strings.Join(keys, ","), "test")
	if err != nil {
		t.Fatalf("parseKEKs = %v", err)
	}
	return r
}

func manager(ctx context.Context, kv jetstream.KeyValue, r *kekRing) (*keyManager, error) {
	return newKeyManager(ctx, kv, r, 24*time.Hour, time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// stored reads the raw keyset record.
func stored(t *testing.T, kv jetstream.KeyValue) (sealedKeyset, string) {
	t.Helper()
	e, err := kv.Get(context.Background(), keysetKey)
	if err != nil {
		t.Fatal(err)
	}
	var s sealedKeyset
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		t.Fatalf("stored keyset is not a sealed record: %v", err)
	}
	return s, string(e.Value())
}

// TestKeysetIsSealedAtRest: what the bucket holds names its KEK and is ciphertext; neither a
// private key nor the transaction key appears in it.
func TestKeysetIsSealedAtRest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv := keysBucket(t)
	m, err := manager(ctx, kv, ring(t, testKEK))
	if err != nil {
		t.Fatalf("newKeyManager = %v", err)
	}
	s, raw := stored(t, kv)
	if s.Version != sealedVersion || s.KEKID != m.keks.current().id || len(s.Ciphertext) == 0 {
		t.Fatalf("stored keyset = v%d kek %q, %d bytes of ciphertext; want v%d kek %q", s.Version, s.KEKID, len(s.Ciphertext), sealedVersion, m.keks.current().id)
	}
	for _, clear := range []string{`"keys"`, `"private"`, `"txn_key"`, m.keys().current.kid} {
		if strings.Contains(raw, clear) {
			t.Errorf("stored keyset contains %s in the clear: %s", clear, raw)
		}
	}
	// A second replica with the same KEK reads the same keys.
	m2, err := manager(ctx, kv, ring(t, testKEK))
	if err != nil {
		t.Fatalf("second replica: newKeyManager = %v", err)
	}
	if got, want := m2.keys().current.kid, m.keys().current.kid; got != want {
		t.Errorf("second replica's kid = %s, want %s", got, want)
	}
	// Rotation of the signing key keeps the keyset sealed.
	if ok, err := m.rotate(ctx, true); !ok || err != nil {
		t.Fatalf("rotate = %v, %v", ok, err)
	}
	if s, raw := stored(t, kv); s.KEKID != m.keks.current().id || strings.Contains(raw, `"private"`) {
		t.Errorf("after rotation the keyset is %s, want sealed", raw)
	}
}

// TestKeysetRefusedWithoutItsKEK: a replica with another KEK (or none of the listed ones) refuses to
// start with an error naming the KEK the keyset needs; a tampered record is refused too.
func TestKeysetRefusedWithoutItsKEK(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv := keysBucket(t)
	right := ring(t, testKEK)
	if _, err := manager(ctx, kv, right); err != nil {
		t.Fatal(err)
	}
	_, err := manager(ctx, kv, ring(t, NewKeyEncryptionKey()))
	if err == nil || !strings.Contains(err.Error(), right.current().id) || !strings.Contains(err.Error(), "not configured") {
		t.Errorf("newKeyManager(another KEK) = %v, want an error naming KEK %s", err, right.current().id)
	}
	s, _ := stored(t, kv)
	s.Ciphertext[len(s.Ciphertext)/2] ^= 1
	b, _ := json.Marshal(s)
	if _, err := kv.Put(ctx, keysetKey, b); err != nil {
		t.Fatal(err)
	}
	if _, err := manager(ctx, kv, right); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Errorf("newKeyManager(tampered record) = %v, want a refusal", err)
	}
}

// TestKEKRotation follows docs/security.md's procedure: the new KEK is added after the old one
// (both open, the old still seals), then moved first (a replica re-seals the bucket under it at
// start), then the old one is dropped. The signing keys and the transaction key survive every
// step, so sessions and logins in flight stay valid.
func TestKEKRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv := keysBucket(t)
	oldKEK, newKEK := NewKeyEncryptionKey(), NewKeyEncryptionKey()
	m0, err := manager(ctx, kv, ring(t, oldKEK))
	if err != nil {
		t.Fatal(err)
	}
	kid := m0.keys().current.kid
	txn, err := m0.keys().seal(map[string]string{"state": "s"}, "cookie")
	if err != nil {
		t.Fatal(err)
	}
	sameKeys := func(step string, m *keyManager) {
		t.Helper()
		if got := m.keys().current.kid; got != kid {
			t.Errorf("%s: signing kid = %s, want %s (kept)", step, got, kid)
		}
		var v map[string]string
		if err := m.keys().open(txn, "cookie", &v); err != nil || v["state"] != "s" {
			t.Errorf("%s: a login cookie sealed before does not open: %v", step, err)
		}
	}
	// Step 1: new key listed second; the old one still seals.
	m1, err := manager(ctx, kv, ring(t, oldKEK, newKEK))
	if err != nil {
		t.Fatalf("step 1: %v", err)
	}
	sameKeys("step 1", m1)
	if s, _ := stored(t, kv); s.KEKID != ring(t, oldKEK).current().id {
		t.Errorf("step 1: keyset sealed under %s, want the old KEK still", s.KEKID)
	}
	if _, err := manager(ctx, kv, ring(t, oldKEK)); err != nil {
		t.Errorf("step 1: a replica not yet given the new KEK = %v, want it to keep working", err)
	}
	// Step 2: new key first; the replica re-seals at start.
	m2, err := manager(ctx, kv, ring(t, newKEK, oldKEK))
	if err != nil {
		t.Fatalf("step 2: %v", err)
	}
	sameKeys("step 2", m2)
	if s, _ := stored(t, kv); s.KEKID != ring(t, newKEK).current().id {
		t.Errorf("step 2: keyset sealed under %s, want the new KEK %s", s.KEKID, ring(t, newKEK).current().id)
	}
	// Step 3: the old key is gone; the new one alone opens everything.
	m3, err := manager(ctx, kv, ring(t, newKEK))
	if err != nil {
		t.Fatalf("step 3: %v", err)
	}
	sameKeys("step 3", m3)
	if _, err := manager(ctx, kv, ring(t, oldKEK)); err == nil {
		t.Errorf("after rotation the old KEK alone = nil error, want refused")
	}
}

// TestUnsealedKeysetIsReplaced: a keyset stored in the clear (by a version before sealing) had
// keys anyone on NATS could read; it is replaced by new sealed keys, not adopted.
func TestUnsealedKeysetIsReplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kv := keysBucket(t)
	legacy, err := newKeyset(nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(legacy)
	if _, err := kv.Create(ctx, keysetKey, b); err != nil {
		t.Fatal(err)
	}
	m, err := manager(ctx, kv, ring(t, testKEK))
	if err != nil {
		t.Fatalf("newKeyManager(unsealed keyset) = %v", err)
	}
	if _, known := m.keys().byKID[legacy.Keys[0].KID]; known {
		t.Errorf("the exposed key %s is still trusted", legacy.Keys[0].KID)
	}
	if s, _ := stored(t, kv); s.KEKID != m.keks.current().id {
		t.Errorf("stored keyset after replacement: kek %q, want sealed under %s", s.KEKID, m.keks.current().id)
	}
}

// TestKEKConfig: the forms the configuration accepts and the errors for the others.
func TestKEKConfig(t *testing.T) {
	t.Parallel()
	k := NewKeyEncryptionKey()
	for _, good := range []string{k, k + "," + NewKeyEncryptionKey(), "# comment\n" + k + "\n" + NewKeyEncryptionKey() + "\n", strings.TrimRight(k, "=")} {
		if _, err := parseKEKs(good, "test"); err != nil {
			t.Errorf("parseKEKs(%q) = %v, want nil", good, err)
		}
	}
	for _, bad := range []string{"", "short", k + "," + k, "aGVsbG8="} {
		if _, err := parseKEKs(bad, "test"); err == nil {
			t.Errorf("parseKEKs(%q) = nil, want an error", bad)
		}
	}
	c := DefaultConfig()
	if _, err := c.loadKEKs(); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("loadKEKs(no key) = %v, want required", err)
	}
	c.KeyEncryptionKey = "not-a-key"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "auth.key_encryption_key") {
		t.Errorf("Validate(bad key) = %v, want an auth.key_encryption_key error", err)
	}
	c.KeyEncryptionKey, c.KeyEncryptionKeyFile = k, "/some/file"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("Validate(key and file) = %v, want an error", err)
	}
}
