package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// A key-encryption key (KEK) seals the keyset auth keeps in the auth_keys bucket: the signing keys
// and the login-transaction key. It lives in auth's configuration only, never in NATS, so someone
// who can read the bucket (a leaked auth credential, a NATS backup, a disk) holds ciphertext and
// still cannot sign a session. Every replica needs the same KEK.
//
// Rotation: the configuration lists keys, newest first. The first seals; the others only open. A
// replica that loads a keyset sealed under an older listed key re-seals it under the first, so the
// procedure is: add the new key second on every replica, then move it first, then (once the bucket
// is re-sealed) drop the old one. docs/security.md, "Key-encryption key", spells it out.

// kekSize is the KEK length: AES-256.
const kekSize = 32

// kek is one key-encryption key.
type kek struct {
	id   string // derived from the key, so a record names its KEK without revealing it
	aead cipher.AEAD
}

// kekRing is the configured KEKs, newest (the sealing one) first.
type kekRing struct {
	keys []kek
}

func (r *kekRing) current() kek { return r.keys[0] }

func (r *kekRing) byID(id string) (kek, bool) {
	for _, k := range r.keys {
		if k.id == id {
			return k, true
		}
	}
	return kek{}, false
}

func (r *kekRing) ids() []string {
	var ids []string
	for _, k := range r.keys {
		ids = append(ids, k.id)
	}
	return ids
}

// kekID names a KEK by a hash of it: stable across replicas, and useless for guessing the key.
func kekID(key []byte) string {
	sum := sha256.Sum256(append([]byte("scimflow auth kek id\x00"), key...))
	return hex.EncodeToString(sum[:8])
}

// NewKeyEncryptionKey returns a fresh KEK in the configuration's text form (base64).
func NewKeyEncryptionKey() string {
	b := make([]byte, kekSize)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// parseKEKs reads keys separated by commas, spaces or newlines; each is 32 bytes in base64
// (standard or URL alphabet, padded or not). Lines starting with # are comments (key files).
func parseKEKs(text, source string) (*kekRing, error) {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	fields := strings.FieldsFunc(strings.Join(lines, " "), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("%s: no key", source)
	}
	r := &kekRing{}
	seen := map[string]bool{}
	for i, f := range fields {
		var key []byte
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(f); err == nil {
				key = b
				break
			}
		}
		if len(key) != kekSize {
			return nil, fmt.Errorf("%s: key %d is not %d bytes of base64 (generate one with: openssl rand -base64 32)", source, i+1, kekSize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%s: key %d: %w", source, i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%s: key %d: %w", source, i+1, err)
		}
		k := kek{id: kekID(key), aead: aead}
		if seen[k.id] {
			return nil, fmt.Errorf("%s: key %d is listed twice", source, i+1)
		}
		seen[k.id] = true
		r.keys = append(r.keys, k)
	}
	return r, nil
}

// loadKEKs reads the KEKs from the configuration: the value itself or the file.
func (c Config) loadKEKs() (*kekRing, error) {
	switch {
	case c.KeyEncryptionKey != "" && c.KeyEncryptionKeyFile != "":
		return nil, errors.New("auth.key_encryption_key and auth.key_encryption_key_file: set one, not both")
	case c.KeyEncryptionKey != "":
		return parseKEKs(c.KeyEncryptionKey, "auth.key_encryption_key")
	case c.KeyEncryptionKeyFile != "":
		b, err := os.ReadFile(c.KeyEncryptionKeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth.key_encryption_key_file: %w", err)
		}
		return parseKEKs(string(b), "auth.key_encryption_key_file "+c.KeyEncryptionKeyFile)
	}
	return nil, errors.New("auth.key_encryption_key or auth.key_encryption_key_file: required; it seals the signing keys kept in NATS (docs/security.md)")
}

// sealedKeyset is the value under keysetKey: the JSON of a storedKeyset, encrypted with AES-256-GCM
// under the KEK named by KEKID. The associated data binds it to this bucket, key and KEK.
type sealedKeyset struct {
	Version    int    `json:"v"`
	KEKID      string `json:"kek_id"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

const sealedVersion = 1

func sealAAD(kekID string) []byte {
	return []byte(KVKeys + "/" + keysetKey + "/v1/" + kekID)
}

// seal encrypts ks under the ring's current KEK.
func (r *kekRing) seal(ks *storedKeyset) ([]byte, error) {
	plain, err := json.Marshal(ks)
	if err != nil {
		return nil, err
	}
	k := r.current()
	nonce := make([]byte, k.aead.NonceSize())
	rand.Read(nonce)
	return json.Marshal(sealedKeyset{Version: sealedVersion, KEKID: k.id, Nonce: nonce, Ciphertext: k.aead.Seal(nil, nonce, plain, sealAAD(k.id))})
}

// errUnsealed marks a keyset stored in the clear by a version before sealing.
var errUnsealed = errors.New("keyset is not sealed")

// open decrypts a stored value; it returns the KEK id that sealed it.
func (r *kekRing) open(b []byte) (*storedKeyset, string, error) {
	var s sealedKeyset
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, "", fmt.Errorf("decode %s: %w", KVKeys, err)
	}
	if s.Version == 0 && s.KEKID == "" && len(s.Ciphertext) == 0 {
		return nil, "", errUnsealed
	}
	if s.Version != sealedVersion {
		return nil, "", fmt.Errorf("%s: sealed keyset version %d, want %d", KVKeys, s.Version, sealedVersion)
	}
	k, ok := r.byID(s.KEKID)
	if !ok {
		return nil, "", fmt.Errorf("%s: the keyset is sealed with key-encryption key %s, which is not configured (configured: %s); every auth replica needs the same auth.key_encryption_key, and a rotation keeps the previous key listed until the bucket is re-sealed",
			KVKeys, s.KEKID, strings.Join(r.ids(), ", "))
	}
	if len(s.Nonce) != k.aead.NonceSize() {
		return nil, "", fmt.Errorf("%s: sealed keyset has a bad nonce", KVKeys)
	}
	plain, err := k.aead.Open(nil, s.Nonce, s.Ciphertext, sealAAD(s.KEKID))
	if err != nil {
		return nil, "", fmt.Errorf("%s: the sealed keyset does not open with key-encryption key %s (tampered with, or a different key with a colliding id)", KVKeys, s.KEKID)
	}
	var ks storedKeyset
	if err := json.Unmarshal(plain, &ks); err != nil {
		return nil, "", fmt.Errorf("decode sealed %s: %w", KVKeys, err)
	}
	return &ks, s.KEKID, nil
}
