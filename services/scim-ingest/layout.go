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
	bucketUserName   = "idx_username"  // idp\0person.NormalizeEmail(userName) → uid (unique, RFC 7643 caseExact=false)
	bucketPerson     = "idx_person"    // idp\0registry email → uid (unique: one live resource per person)
	bucketUserExtID  = "idx_user_ext"  // idp\0externalId\0uid → ""
	bucketUserEmail  = "idx_email"     // idp\0lower(email)\0uid → ""
	bucketGroupName  = "idx_group"     // idp\0lower(displayName) → gid (unique)
	bucketGroupExtID = "idx_group_ext" // idp\0externalId\0gid → ""
	bucketMeta       = "meta"          // layoutKey → layout version
)

// layoutVersion is the version of the index layout above. Version 2 keys userNames by
// person.NormalizeEmail (trimmed of Unicode white space, not only lower-cased) and adds bucketPerson;
// a file of an older version has both rebuilt from the stored users when the store opens (migrate).
const (
	layoutVersion = 2
	layoutKey     = "layout_version"
)

var allBuckets = []string{bucketUsers, bucketGroups, bucketMembers, bucketUserGroups, bucketUserName,
	bucketUserExtID, bucketUserEmail, bucketGroupName, bucketGroupExtID, bucketPerson, bucketMeta}

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
		out[bucketUserName] = [][]byte{key(idp, userNameKey(u))}
	}
	if p := personKey(attrs); p != "" {
		out[bucketPerson] = [][]byte{key(idp, p)}
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
// presence keys ending in the id. A unique entry is removed or written only when it is the id's own
// (or free): a file written before a uniqueness rule existed may hold two resources with one key, and
// then the first one keeps it and the other's changes never take it over.
func reindex(tx *bolt.Tx, id string, old, new map[string][][]byte) error {
	for b, keys := range old {
		bk := tx.Bucket([]byte(b))
		for _, k := range keys {
			if uniqueIndex(b) {
				if v := bk.Get(k); v != nil && string(v) != id {
					continue
				}
			}
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
	}
	for b, keys := range new {
		bk := tx.Bucket([]byte(b))
		v := []byte{}
		if uniqueIndex(b) {
			v = []byte(id)
		}
		for _, k := range keys {
			if uniqueIndex(b) {
				if cur := bk.Get(k); cur != nil && string(cur) != id {
					continue
				}
			}
			if err := bk.Put(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

func uniqueIndex(bucket string) bool {
	return bucket == bucketUserName || bucket == bucketGroupName || bucket == bucketPerson
}

// migrate brings an older file's indexes to layoutVersion: the userName index is rebuilt under
// userNameKey and the person index is built, both from the stored users in key (creation) order, so
// where two users share a key the older keeps it. It returns how many users shared a key with an
// older one.
func migrate(db *bolt.DB) (int, error) {
	shared := 0
	err := db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		if v := meta.Get([]byte(layoutKey)); v != nil && string(v) == fmt.Sprint(layoutVersion) {
			return nil
		}
		for _, b := range []string{bucketUserName, bucketPerson} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		names, persons := tx.Bucket([]byte(bucketUserName)), tx.Bucket([]byte(bucketPerson))
		err := tx.Bucket([]byte(bucketUsers)).ForEach(func(k, v []byte) error {
			idp, uid, _ := strings.Cut(string(k), "\x00")
			rec, err := decodeRec(v)
			if err != nil {
				return err
			}
			keys := userIndexKeys(idp, uid, rec.Attrs)
			for b, bk := range map[string]*bolt.Bucket{bucketUserName: names, bucketPerson: persons} {
				for _, ik := range keys[b] {
					if bk.Get(ik) != nil {
						shared++
						continue
					}
					if err := bk.Put(ik, []byte(uid)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return meta.Put([]byte(layoutKey), []byte(fmt.Sprint(layoutVersion)))
	})
	return shared, err
}

// personKey is the key of the person a user links to, for the one-resource-per-person rule: its
// registry email when that is an address. A registry email without an '@' (an IdP that puts a
// timestamp in emails) links no one a login can reach, since logins present checked addresses
// (person.CheckEmail), so such users are not held to the rule.
func personKey(attrs map[string]any) string {
	if p := registryEmail(attrs); strings.Contains(p, "@") {
		return p
	}
	return ""
}

// userNameKey is the form under which userNames are unique: the one normalisation of person (trimmed
// of Unicode white space, lower-cased), so "lena@x.com", "Lena@x.com\t" and "lena@x.com" followed by
// a no-break space are one userName.
func userNameKey(u string) string { return person.NormalizeEmail(u) }

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
