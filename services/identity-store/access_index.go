package identitystore

import (
	"encoding/binary"
	"encoding/json"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// The policy tester reads every registry user. Decoding each full user record (SCIM state, both group
// lists, timestamps: about a kilobyte of JSON) made a 100,000-user run take seconds, so the projection
// keeps a compact copy of what a policy reads in bkAccessIdent, written wherever a user record is
// (storeUser, userCache.flush) and built at open for files that predate it. It is part of the
// canonical dump like any index, so live and replayed stores agree on it.
//
// Encoding (version 1): version byte, flags byte (1: deprovisioned, 2: locked), then uvarint-length-
// prefixed strings: email, IdP id, the number of groups and each group name (the SCIM groups where
// SCIM knows the person, else the groups of the last login — what the next login gets), and the
// oidc_fields as JSON (empty when none).

const accessIdentVersion = 1

func encodeAccessIdent(u *user) ([]byte, error) {
	var flags byte
	if u.Deprovisioned {
		flags |= 1
	}
	if u.Locked {
		flags |= 2
	}
	groups := u.Groups
	if u.SCIMUserID != "" {
		groups = u.SCIMGroups
	}
	var claims []byte
	if len(u.OIDCFields) > 0 {
		var err error
		if claims, err = json.Marshal(u.OIDCFields); err != nil {
			return nil, err
		}
	}
	b := make([]byte, 0, 64+len(u.Email)+len(claims)+16*len(groups))
	b = append(b, accessIdentVersion, flags)
	str := func(s []byte) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	str([]byte(u.Email))
	str([]byte(u.IdPID))
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		str([]byte(g.Name))
	}
	str(claims)
	return b, nil
}

// accessIdent is a decoded bkAccessIdent value. Strings point into a copy owned by the caller.
type accessIdent struct {
	email, idp    string
	groups        []string
	claims        []byte // oidc_fields JSON; decoded only when a policy reads claims
	deprovisioned bool
	locked        bool
}

var errBadAccessIdent = errors.New("malformed access identity record")

func decodeAccessIdent(v []byte, into *accessIdent) error {
	if len(v) < 2 || v[0] != accessIdentVersion {
		return errBadAccessIdent
	}
	into.deprovisioned, into.locked = v[1]&1 != 0, v[1]&2 != 0
	v = v[2:]
	next := func() ([]byte, bool) {
		n, k := binary.Uvarint(v)
		if k <= 0 || uint64(len(v)-k) < n {
			return nil, false
		}
		s := v[k : k+int(n)]
		v = v[k+int(n):]
		return s, true
	}
	e, ok1 := next()
	i, ok2 := next()
	if !ok1 || !ok2 {
		return errBadAccessIdent
	}
	into.email, into.idp = string(e), string(i)
	n, k := binary.Uvarint(v)
	if k <= 0 || n > uint64(len(v)) {
		return errBadAccessIdent
	}
	v = v[k:]
	into.groups = into.groups[:0]
	for range n {
		g, ok := next()
		if !ok {
			return errBadAccessIdent
		}
		into.groups = append(into.groups, string(g))
	}
	c, ok := next()
	if !ok {
		return errBadAccessIdent
	}
	into.claims = c
	return nil
}

func putAccessIdent(tx *bolt.Tx, u *user) error {
	v, err := encodeAccessIdent(u)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bkAccessIdent)).Put([]byte(u.ID), v)
}

// backfillAccessIdent builds bkAccessIdent for a file written before it existed.
func backfillAccessIdent(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket([]byte(bkAccessIdent)).Cursor().First(); k != nil {
			return nil
		}
		return tx.Bucket([]byte(bkUsers)).ForEach(func(k, _ []byte) error {
			u, err := getUser(tx, string(k))
			if err != nil || u == nil {
				return err
			}
			return putAccessIdent(tx, u)
		})
	})
}
