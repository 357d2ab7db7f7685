package identitystore

import (
	"bytes"
	"cmp"
	"encoding/json"
	"slices"
	"strings"
	"unicode"

	bolt "go.etcd.io/bbolt"
)

// maxQueryLen bounds the q parameter of GET /api/v1/users: a prefix longer than any name or email
// is a mistake, not a search.
const maxQueryLen = 256

// nameTokens are the index entries of a user's names: the whole lower-cased name and each of its
// words, for the registry name and the SCIM display name, so "lena", "schmidt" and "lena sch" all
// find "Lena Schmidt" by prefix.
func nameTokens(u *user) []string {
	if u == nil {
		return nil
	}
	var out []string
	add := func(name string) {
		name = strings.ToLower(strings.Join(strings.Fields(name), " "))
		if name == "" {
			return
		}
		out = append(out, name)
		words := strings.FieldsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == '-' || r == ',' })
		if len(words) > 1 {
			out = append(out, words...)
		}
	}
	add(u.Name)
	if u.SCIM != nil && !u.SCIM.Deleted {
		add(u.SCIM.displayName())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// indexNames keeps users_by_name in step with a user's change (before is nil for a new user).
func indexNames(tx *bolt.Tx, before, u *user) error {
	b := tx.Bucket([]byte(bkNames))
	want := nameTokens(u)
	for _, tok := range nameTokens(before) {
		if _, found := slices.BinarySearch(want, tok); !found {
			if err := b.Delete(key(tok, u.ID)); err != nil {
				return err
			}
		}
	}
	for _, tok := range want {
		if err := b.Put(key(tok, u.ID), []byte{}); err != nil {
			return err
		}
	}
	return nil
}

// backfillIndexes builds users_by_name and scimlog_last for a registry file written before they
// existed (both empty while users or log rows exist). Both derive from the current state alone, so
// the result equals what applying the streams would have built.
func backfillIndexes(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket([]byte(bkNames))
		if k, _ := names.Cursor().First(); k == nil {
			err := tx.Bucket([]byte(bkUsers)).ForEach(func(k, _ []byte) error {
				u, err := getUser(tx, string(k))
				if err != nil || u == nil {
					return err
				}
				if u.Locked {
					// The locked counter came with this index: a file without one has none either.
					if err := statAdd(tx, statLocked(u.IdPID), 1); err != nil {
						return err
					}
				}
				return indexNames(tx, nil, u)
			})
			if err != nil {
				return err
			}
		}
		last := tx.Bucket([]byte(bkSCIMLogLast))
		if k, _ := last.Cursor().First(); k == nil {
			seen := map[string]bool{}
			c := tx.Bucket([]byte(bkSCIMLog)).Cursor()
			for k, v := c.Last(); k != nil; k, v = c.Prev() {
				var row logRow
				if err := json.Unmarshal(v, &row); err != nil {
					return err
				}
				if !seen[row.IdPID] {
					seen[row.IdPID] = true
					if err := last.Put([]byte(row.IdPID), bytes.Clone(k)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// searchUsers returns the ids of users whose email (identity or SCIM) or name starts with q
// (case-insensitive), sorted by email then id: both indexes are prefix-scanned, so the cost is the
// number of matches, not the registry's size. idp, when set, restricts the email scan by key.
func searchUsers(tx *bolt.Tx, q, idp string) ([]string, error) {
	q = strings.ToLower(strings.Join(strings.Fields(q), " "))
	type hit struct{ email, id string }
	seen := map[string]bool{}
	var hits []hit
	add := func(email, id string) {
		if !seen[id] {
			seen[id] = true
			hits = append(hits, hit{email, id})
		}
	}
	err := prefixScan(tx, bkEmail, []byte(q), func(k, v []byte) error {
		parts := bytes.SplitN(k, []byte{0}, 2)
		if idp != "" && (len(parts) != 2 || string(parts[1]) != idp) {
			return nil
		}
		add(string(parts[0]), string(v))
		return nil
	})
	if err != nil {
		return nil, err
	}
	var byName []string
	err = prefixScan(tx, bkNames, []byte(q), func(k, _ []byte) error {
		if id := lastPart(k); !seen[id] {
			byName = append(byName, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range byName {
		if seen[id] {
			continue
		}
		u, err := getUser(tx, id)
		if err != nil {
			return nil, err
		}
		if u != nil && (idp == "" || u.IdPID == idp) {
			add(u.Email, id)
		}
	}
	slices.SortFunc(hits, func(a, b hit) int { return cmp.Or(strings.Compare(a.email, b.email), strings.Compare(a.id, b.id)) })
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.id
	}
	return out, nil
}
