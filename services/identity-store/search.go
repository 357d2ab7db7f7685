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
	// The value carries what a search sorts and filters by, so a search decodes no user record.
	val := key(u.Email, u.IdPID)
	for _, tok := range want {
		if err := b.Put(key(tok, u.ID), val); err != nil {
			return err
		}
	}
	return nil
}

// indexStatus keeps users_by_status in step with a user's change (before is nil for a new user).
func indexStatus(tx *bolt.Tx, before, u *user) error {
	b := tx.Bucket([]byte(bkStatus))
	now := u.status()
	if before != nil {
		if old := before.status(); old != now {
			if err := b.Delete(key(old, u.IdPID, u.ID)); err != nil {
				return err
			}
		}
	}
	return b.Put(key(now, u.IdPID, u.ID), []byte{})
}

// backfillIndexes builds users_by_name, users_by_status and scimlog_last for a registry file written before they
// existed (both empty while users or log rows exist). Both derive from the current state alone, so
// the result equals what applying the streams would have built.
func backfillIndexes(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		// users_by_status has an entry for every user, so it is empty only in a file that predates
		// these indexes (or has no users): the non-idempotent locked counter is built once.
		if k, _ := tx.Bucket([]byte(bkStatus)).Cursor().First(); k == nil {
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
				if err := indexStatus(tx, nil, u); err != nil {
					return err
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

// searchHit is one user a search found: enough to sort, filter and page without decoding it.
type searchHit struct{ email, idp, id string }

// searchUsers returns the users whose email (identity or SCIM) or name starts with q
// (case-insensitive), sorted by email then id. Both indexes are prefix-scanned and carry email and
// IdP in the entry, so the cost grows with the number of matches, not the registry's size, and no
// user record is decoded. idp, when set, keeps that IdP's users only.
func searchUsers(tx *bolt.Tx, q, idp string) ([]searchHit, error) {
	q = strings.ToLower(strings.Join(strings.Fields(q), " "))
	// A short prefix can match a large part of the registry, and every match is counted
	// (total_count) and sorted, so the scans filter and deduplicate on the index bytes and allocate
	// only for a user kept (lookups with string(b) do not allocate).
	seen := map[string]struct{}{}
	var hits []searchHit
	add := func(email, hidp, id []byte) {
		if idp != "" && string(hidp) != idp {
			return
		}
		if _, dup := seen[string(id)]; dup {
			return
		}
		h := searchHit{email: string(email), idp: string(hidp), id: string(id)}
		seen[h.id] = struct{}{}
		hits = append(hits, h)
	}
	err := prefixScan(tx, bkEmail, []byte(q), func(k, v []byte) error {
		email, kidp, _ := bytes.Cut(k, []byte{0})
		add(email, kidp, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = prefixScan(tx, bkNames, []byte(q), func(k, v []byte) error {
		email, vidp, _ := bytes.Cut(v, []byte{0})
		add(email, vidp, k[bytes.LastIndexByte(k, 0)+1:])
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Hits from the email index alone are usually in order already (it is keyed by email).
	byEmail := func(a, b searchHit) int {
		return cmp.Or(strings.Compare(a.email, b.email), strings.Compare(a.id, b.id))
	}
	if !slices.IsSortedFunc(hits, byEmail) {
		slices.SortFunc(hits, byEmail)
	}
	return hits, nil
}

// hasStatus reports whether the user of h has status st, from the status index.
func hasStatus(tx *bolt.Tx, h searchHit, st string) bool {
	return tx.Bucket([]byte(bkStatus)).Get(key(st, h.idp, h.id)) != nil
}
