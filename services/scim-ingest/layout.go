package scimingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/person"
)

// Buckets of scim-ingest's bbolt file, as the resource store (store.go) maintains them. Every key
// starts with the IdP id and a NUL, so one IdP's resources are a contiguous key range and another
// IdP's ids are never found through its endpoint.
//
// Group membership is one key per (group, member) in bucketMembers plus the reverse key in
// bucketUserGroups: adding or removing a member writes two small keys whatever the group's size, and
// a group's own record never holds its member list.
const (
	bucketUsers      = "users"         // idp\0uid → resourceRec
	bucketGroups     = "groups"        // idp\0gid → resourceRec
	bucketMembers    = "members"       // idp\0gid\0uid → ""
	bucketUserGroups = "user_groups"   // idp\0uid\0gid → ""
	bucketUserName   = "idx_username"  // idp\0lower(userName) → uid (unique, RFC 7643 caseExact=false)
	bucketUserExtID  = "idx_user_ext"  // idp\0externalId\0uid → ""
	bucketUserEmail  = "idx_email"     // idp\0lower(email)\0uid → ""
	bucketGroupName  = "idx_group"     // idp\0lower(displayName) → gid (unique)
	bucketGroupExtID = "idx_group_ext" // idp\0externalId\0gid → ""
)

var allBuckets = []string{bucketUsers, bucketGroups, bucketMembers, bucketUserGroups, bucketUserName,
	bucketUserExtID, bucketUserEmail, bucketGroupName, bucketGroupExtID}

// resourceRec is a stored user or group: the validated SCIM attributes (canonical attribute names;
// no id, meta, schemas, members or password) and the metadata the server maintains.
type resourceRec struct {
	Attrs    map[string]any `json:"attrs"`
	Version  int64          `json:"version"`
	Created  time.Time      `json:"created"`
	Modified time.Time      `json:"modified"`
}

func key(parts ...string) []byte {
	return []byte(strings.Join(parts, "\x00"))
}

// prefix is key(parts...) followed by the separator: the range of keys below that node.
func prefix(parts ...string) []byte {
	return append(key(parts...), 0)
}

func decodeRec(v []byte) (*resourceRec, error) {
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	var r resourceRec
	if err := d.Decode(&r); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	if r.Attrs == nil {
		r.Attrs = map[string]any{}
	}
	return &r, nil
}

func getRec(tx *bolt.Tx, bucket, idp, id string) (*resourceRec, error) {
	v := tx.Bucket([]byte(bucket)).Get(key(idp, id))
	if v == nil {
		return nil, nil
	}
	return decodeRec(v)
}

func putRec(tx *bolt.Tx, bucket, idp, id string, r *resourceRec) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bucket)).Put(key(idp, id), v)
}

// strAttr returns the string attribute name of attrs (canonical spelling), or "".
func strAttr(attrs map[string]any, name string) string {
	s, _ := attrs[name].(string)
	return s
}

// emailValues returns the values of a user's emails, in order.
func emailValues(attrs map[string]any) []string {
	var out []string
	list, _ := attrs["emails"].([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			if v, ok := m["value"].(string); ok && v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// registryEmail is the lower-cased email that identifies a user in the registry (docs/design.md §4): the
// userName if it is an email address, else the primary email, else the work email, else the first.
func registryEmail(attrs map[string]any) string {
	if u := strAttr(attrs, "userName"); strings.Contains(u, "@") {
		return person.NormalizeEmail(u)
	}
	list, _ := attrs["emails"].([]any)
	var work, first string
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		v, _ := m["value"].(string)
		if v == "" {
			continue
		}
		if p, _ := m["primary"].(bool); p {
			return person.NormalizeEmail(v)
		}
		if t, _ := m["type"].(string); strings.EqualFold(t, "work") && work == "" {
			work = v
		}
		if first == "" {
			first = v
		}
	}
	if work != "" {
		return person.NormalizeEmail(work)
	}
	return person.NormalizeEmail(first)
}

// userIndexKeys lists the index entries of a user: bucket → keys.
func userIndexKeys(idp, uid string, attrs map[string]any) map[string][][]byte {
	out := map[string][][]byte{}
	if u := strAttr(attrs, "userName"); u != "" {
		out[bucketUserName] = [][]byte{key(idp, strings.ToLower(u))}
	}
	if x := strAttr(attrs, "externalId"); x != "" {
		out[bucketUserExtID] = [][]byte{key(idp, x, uid)}
	}
	for _, e := range emailValues(attrs) {
		out[bucketUserEmail] = append(out[bucketUserEmail], key(idp, strings.ToLower(e), uid))
	}
	return out
}

func groupIndexKeys(idp, gid string, attrs map[string]any) map[string][][]byte {
	out := map[string][][]byte{}
	if n := strAttr(attrs, "displayName"); n != "" {
		out[bucketGroupName] = [][]byte{key(idp, strings.ToLower(n))}
	}
	if x := strAttr(attrs, "externalId"); x != "" {
		out[bucketGroupExtID] = [][]byte{key(idp, x, gid)}
	}
	return out
}

// reindex replaces the index entries old by new. Unique indexes map to the id; the others are
// presence keys ending in the id.
func reindex(tx *bolt.Tx, id string, old, new map[string][][]byte) error {
	for b, keys := range old {
		bk := tx.Bucket([]byte(b))
		for _, k := range keys {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
	}
	for b, keys := range new {
		bk := tx.Bucket([]byte(b))
		var v []byte
		if b == bucketUserName || b == bucketGroupName {
			v = []byte(id)
		} else {
			v = []byte{}
		}
		for _, k := range keys {
			if err := bk.Put(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// lookupUnique returns the id stored under the unique index key, or "".
func lookupUnique(tx *bolt.Tx, bucket, idp, value string) string {
	return string(tx.Bucket([]byte(bucket)).Get(key(idp, strings.ToLower(value))))
}

// lookupMulti returns the ids under idp\0value\0 in a presence index.
func lookupMulti(tx *bolt.Tx, bucket, idp, value string) []string {
	p := prefix(idp, value)
	var ids []string
	c := tx.Bucket([]byte(bucket)).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		ids = append(ids, string(k[len(p):]))
	}
	return ids
}

// children returns the last key component of every key under prefix(parts...).
func children(tx *bolt.Tx, bucket string, parts ...string) []string {
	p := prefix(parts...)
	var ids []string
	c := tx.Bucket([]byte(bucket)).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		ids = append(ids, string(k[len(p):]))
	}
	return ids
}

func isMember(tx *bolt.Tx, idp, gid, uid string) bool {
	return tx.Bucket([]byte(bucketMembers)).Get(key(idp, gid, uid)) != nil
}

func addMember(tx *bolt.Tx, idp, gid, uid string) error {
	if err := tx.Bucket([]byte(bucketMembers)).Put(key(idp, gid, uid), []byte{}); err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketUserGroups)).Put(key(idp, uid, gid), []byte{})
}

func removeMember(tx *bolt.Tx, idp, gid, uid string) error {
	if err := tx.Bucket([]byte(bucketMembers)).Delete(key(idp, gid, uid)); err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketUserGroups)).Delete(key(idp, uid, gid))
}

// countKeys counts the keys under prefix(idp) of bucket.
func countKeys(tx *bolt.Tx, bucket, idp string) int {
	p := prefix(idp)
	n := 0
	c := tx.Bucket([]byte(bucket)).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		n++
	}
	return n
}
