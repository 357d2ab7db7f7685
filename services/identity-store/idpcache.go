package identitystore

import (
	"slices"
	"strings"
	"sync"

	"github.com/scimflow/scimflow/events"
)

// idpCache is identity-store's in-memory copy of the idp_config bucket, kept by an idp_config watch
// (internal/idpwatch, the rule every service shares: a deleted or undecodable entry is no IdP). The
// admin API's IdP list — and with it every console page that names IdPs, the overview among them —
// is served from it instead of a key listing and one get per IdP (about 50 round trips with 50 IdPs).
//
// identity-store also writes the bucket, and a list right after its own write must show that write,
// but the watch may deliver it a moment later. So every write of this process is applied here at
// once with its revision, and an update with a revision not newer than what is held — the watch's
// late copy of that same write, or an older one — changes nothing.
type idpCache struct {
	mu     sync.RWMutex // guards the following
	idps   map[string]cachedIdP
	synced bool // the watch delivered the bucket's contents at start
}

type cachedIdP struct {
	idp *events.IdP // nil: deleted (kept so that older updates stay ignored)
	rev uint64
}

func newIdPCache() *idpCache { return &idpCache{idps: map[string]cachedIdP{}} }

// apply records the bucket's entry id at revision rev (idp nil: deleted or undecodable), unless
// something newer is held.
func (c *idpCache) apply(id string, idp *events.IdP, rev uint64) {
	if !validID.MatchString(id) {
		return // never an IdP of the admin API (getIdP refuses such keys too)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.idps[id]; ok && rev <= cur.rev {
		return
	}
	c.idps[id] = cachedIdP{idp: idp, rev: rev}
}

// wrote applies this process's own successful put of p at revision rev.
func (c *idpCache) wrote(p events.IdP, rev uint64) { c.apply(p.ID, &p, rev) }

// deleted applies this process's own deletion of id, whose entry had revision rev: the deletion
// marker's revision is not returned by the KV client, so every update up to rev is ignored and the
// watch's copy of the marker (a newer revision) confirms it.
func (c *idpCache) deleted(id string, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.idps[id]
	c.idps[id] = cachedIdP{rev: max(cur.rev, rev)}
}

func (c *idpCache) markSynced() {
	c.mu.Lock()
	c.synced = true
	c.mu.Unlock()
}

// list returns every IdP sorted as listIdPs sorts them; ok is false until the watch delivered the
// bucket's contents (callers then read the bucket).
func (c *idpCache) list() (out []events.IdP, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return nil, false
	}
	for _, e := range c.idps {
		if e.idp != nil {
			out = append(out, *e.idp)
		}
	}
	slices.SortFunc(out, func(a, b events.IdP) int {
		if c := strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, true
}
