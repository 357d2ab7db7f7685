package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// KVKeys is the JetStream KV bucket holding auth's signing keys, shared by every replica so a session
// minted by one verifies on all. It holds one key, keysetKey, updated with compare-and-set, whose
// value is sealed with the key-encryption key (kek.go): the bucket alone does not let anyone sign.
const KVKeys = "auth_keys"

// KVLoginTxn records used login transactions (key = transaction id, value empty) so a state/code pair
// is accepted once across all replicas; entries expire with the bucket's MaxAge.
const KVLoginTxn = "auth_login_txn"

const keysetKey = "keyset"

// signingAlg is the algorithm of auth's own tokens: ES256 signs and verifies fast on every platform
// Go supports with assembly, which matters for /verify on a cache miss.
const signingAlg = jose.ES256

// storedKey is one signing key as kept in the KV bucket.
type storedKey struct {
	KID       string    `json:"kid"`
	Alg       string    `json:"alg"`
	Private   []byte    `json:"private"` // PKCS#8 DER
	CreatedAt time.Time `json:"created_at"`
}

// storedKeyset is the value under keysetKey. Keys are newest first: Keys[0] signs, Keys[1] (the
// previous key) still verifies, older keys are gone. TxnKey encrypts login-transaction cookies.
type storedKeyset struct {
	Keys   []storedKey `json:"keys"`
	TxnKey []byte      `json:"txn_key"`
}

type signingKey struct {
	kid     string
	priv    *ecdsa.PrivateKey
	created time.Time
	signer  jose.Signer
}

// keyring is an immutable snapshot of the keyset; the manager swaps it atomically.
type keyring struct {
	current *signingKey
	byKID   map[string]*signingKey
	order   []*signingKey // newest first
	aead    cipher.AEAD
	rev     uint64
}

// keyManager keeps the keyring in step with the KV bucket and rotates it on schedule. Any replica
// may rotate; compare-and-set on the KV revision makes exactly one rotation win per interval, and the
// others pick the winner up through their watch.
type keyManager struct {
	kv       jetstream.KeyValue
	keks     *kekRing
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	ring     atomic.Pointer[keyring]

	reloadMu   sync.Mutex // guards lastReload
	lastReload time.Time
}

func newKeyManager(ctx context.Context, kv jetstream.KeyValue, keks *kekRing, interval time.Duration, now func() time.Time, log *slog.Logger) (*keyManager, error) {
	m := &keyManager{kv: kv, keks: keks, interval: interval, now: now, log: log}
	for range 5 {
		e, err := kv.Get(ctx, keysetKey)
		if err == nil {
			replaced, err := m.adopt(ctx, e)
			if err != nil {
				return nil, err
			}
			if replaced {
				continue // read what is there now
			}
			return m, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("read %s: %w", KVKeys, err)
		}
		ks, err := newKeyset(nil, now())
		if err != nil {
			return nil, err
		}
		b, err := keks.seal(ks)
		if err != nil {
			return nil, err
		}
		if _, err := kv.Create(ctx, keysetKey, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("create %s: %w", KVKeys, err)
		}
		// Created, or another replica won the race: read what is there.
	}
	return nil, errors.New("auth keys: could not create or read the keyset")
}

// adopt loads the stored keyset at start. A keyset sealed under an older configured KEK is re-sealed
// under the current one (KEK rotation); a keyset in the clear, written before sealing existed, is
// replaced by a fresh sealed one: its keys were readable by anyone who could read the bucket, so
// sessions they signed must not stay valid. replaced reports a write (the caller reads again).
func (m *keyManager) adopt(ctx context.Context, e jetstream.KeyValueEntry) (replaced bool, err error) {
	ks, id, err := m.keks.open(e.Value())
	switch {
	case errors.Is(err, errUnsealed):
		fresh, err := newKeyset(nil, m.now())
		if err != nil {
			return false, err
		}
		b, err := m.keks.seal(fresh)
		if err != nil {
			return false, err
		}
		if _, err := m.kv.Update(ctx, keysetKey, b, e.Revision()); err != nil && !isWrongLastSequence(err) {
			return false, fmt.Errorf("replace unsealed %s: %w", KVKeys, err)
		}
		m.log.Warn("signing keys were stored unsealed (written before sealing existed); replaced them with new sealed keys: existing sessions end and users log in again")
		return true, nil
	case err != nil:
		return false, err
	case id != m.keks.current().id:
		b, err := m.keks.seal(ks)
		if err != nil {
			return false, err
		}
		if _, err := m.kv.Update(ctx, keysetKey, b, e.Revision()); err != nil && !isWrongLastSequence(err) {
			return false, fmt.Errorf("re-seal %s: %w", KVKeys, err)
		}
		m.log.Info("signing keyset re-sealed under the current key-encryption key", "from_kek", id, "to_kek", m.keks.current().id)
		return true, nil
	}
	m.log.Info("signing keyset loaded", "kek", id)
	return false, m.install(ks, e.Revision())
}

// isWrongLastSequence reports a lost compare-and-set: another replica wrote first.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// newKeyset returns a keyset with a fresh current key followed by the previous keyset's current
// key (if any); the transaction key is kept.
func newKeyset(prev *storedKeyset, now time.Time) (*storedKeyset, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	k := storedKey{KID: strings.ToLower(rand.Text()[:16]), Alg: string(signingAlg), Private: der, CreatedAt: now.UTC()}
	ks := &storedKeyset{Keys: []storedKey{k}}
	if prev != nil {
		if len(prev.Keys) > 0 {
			ks.Keys = append(ks.Keys, prev.Keys[0])
		}
		ks.TxnKey = prev.TxnKey
	}
	if len(ks.TxnKey) != 32 {
		ks.TxnKey = make([]byte, 32)
		rand.Read(ks.TxnKey)
	}
	return ks, nil
}

// load opens a stored (sealed) keyset and installs it.
func (m *keyManager) load(b []byte, rev uint64) error {
	if cur := m.ring.Load(); cur != nil && cur.rev >= rev {
		return nil
	}
	ks, _, err := m.keks.open(b)
	if err != nil {
		return err
	}
	return m.install(ks, rev)
}

// install makes ks the keyring unless a newer revision is installed already.
func (m *keyManager) install(ks *storedKeyset, rev uint64) error {
	if cur := m.ring.Load(); cur != nil && cur.rev >= rev {
		return nil
	}
	if len(ks.Keys) == 0 || len(ks.TxnKey) != 32 {
		return fmt.Errorf("%s: keyset has no key", KVKeys)
	}
	r := &keyring{byKID: map[string]*signingKey{}, rev: rev}
	for _, sk := range ks.Keys {
		p, err := x509.ParsePKCS8PrivateKey(sk.Private)
		if err != nil {
			return fmt.Errorf("%s key %s: %w", KVKeys, sk.KID, err)
		}
		priv, ok := p.(*ecdsa.PrivateKey)
		if !ok || sk.Alg != string(signingAlg) {
			return fmt.Errorf("%s key %s: not an %s key", KVKeys, sk.KID, signingAlg)
		}
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: signingAlg, Key: jose.JSONWebKey{Key: priv, KeyID: sk.KID}},
			(&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			return err
		}
		k := &signingKey{kid: sk.KID, priv: priv, created: sk.CreatedAt, signer: signer}
		r.byKID[k.kid] = k
		r.order = append(r.order, k)
	}
	r.current = r.order[0]
	block, err := aes.NewCipher(ks.TxnKey)
	if err != nil {
		return err
	}
	if r.aead, err = cipher.NewGCM(block); err != nil {
		return err
	}
	for {
		cur := m.ring.Load()
		if cur != nil && cur.rev >= rev {
			return nil
		}
		if m.ring.CompareAndSwap(cur, r) {
			return nil
		}
	}
}

// keys returns the current keyring.
func (m *keyManager) keys() *keyring { return m.ring.Load() }

// reloadForUnknownKID re-reads the keyset when a token names a kid this replica does not know yet
// (another replica rotated and the watch has not delivered). At most once a second.
func (m *keyManager) reloadForUnknownKID(ctx context.Context) bool {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	if time.Since(m.lastReload) < time.Second {
		return false
	}
	m.lastReload = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	e, err := m.kv.Get(ctx, keysetKey)
	if err != nil {
		return false
	}
	return m.load(e.Value(), e.Revision()) == nil
}

// rotate replaces the signing key when it is older than the interval (or always, if force). It
// returns whether this call rotated.
func (m *keyManager) rotate(ctx context.Context, force bool) (bool, error) {
	e, err := m.kv.Get(ctx, keysetKey)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", KVKeys, err)
	}
	ks, _, err := m.keks.open(e.Value())
	if err != nil {
		return false, err
	}
	if !force && len(ks.Keys) > 0 && m.now().Sub(ks.Keys[0].CreatedAt) < m.interval {
		return false, m.install(ks, e.Revision())
	}
	next, err := newKeyset(ks, m.now())
	if err != nil {
		return false, err
	}
	b, err := m.keks.seal(next)
	if err != nil {
		return false, err
	}
	rev, err := m.kv.Update(ctx, keysetKey, b, e.Revision())
	if err != nil {
		// Another replica rotated first; adopt its keyset.
		if e2, gerr := m.kv.Get(ctx, keysetKey); gerr == nil {
			_ = m.load(e2.Value(), e2.Revision())
		}
		return false, nil
	}
	if err := m.install(next, rev); err != nil {
		return false, err
	}
	m.log.Info("signing key rotated", "kid", next.Keys[0].KID)
	return true, nil
}

// run follows the bucket and rotates on schedule until ctx ends. A watch that ends early (NATS
// trouble) is re-established; until then a token with an unknown kid re-reads the bucket.
func (m *keyManager) run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := m.follow(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("signing keyset watch ended; re-establishing", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (m *keyManager) follow(ctx context.Context) error {
	w, err := m.kv.Watch(ctx, keysetKey, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch %s: %w", KVKeys, err)
	}
	defer w.Stop()
	// Catch up with anything that changed while no watch was running.
	if e, err := m.kv.Get(ctx, keysetKey); err == nil {
		_ = m.load(e.Value(), e.Revision())
	}
	check := min(m.interval/10, time.Minute)
	if check <= 0 {
		check = time.Minute
	}
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				if err := m.load(e.Value(), e.Revision()); err != nil {
					m.log.Error("signing keyset update rejected", "err", err)
				}
			}
		case <-t.C:
			if _, err := m.rotate(ctx, false); err != nil && ctx.Err() == nil {
				m.log.Warn("signing key rotation check failed", "err", err)
			}
		}
	}
}

// jwks is the public JWKS of the keyring: current and previous key.
func (r *keyring) jwks() jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	for _, k := range r.order {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(signingAlg), Use: "sig"})
	}
	return set
}
