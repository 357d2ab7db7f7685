package scimingest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// TestReplayRebuildsIdenticalFile: traffic of every kind is applied live, then Replay rebuilds
// scim-ingest's file from the SCIM stream alone; the canonical dumps (outbox excluded) are equal.
func TestReplayRebuildsIdenticalFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t, noRateLimit)
	h.putIdP("idp2", true, "s3cret-idp2", "")
	eventually(t, "idp2 known", func() bool {
		return h.doAs("idp2", "s3cret-idp2", "GET", "/Users", nil, nil).status == http.StatusOK
	})
	must := func(r resp, want int) resp {
		t.Helper()
		if r.status != want {
			t.Fatalf("%d %s, want %d", r.status, r.raw, want)
		}
		return r
	}
	var uids []string
	for i := range 6 {
		u := oktaUser(fmt.Sprintf("replay%d@x.test", i))
		u["title"] = fmt.Sprintf("title %d", i)
		u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = map[string]any{"employeeNumber": fmt.Sprint(1000 + i)}
		uids = append(uids, str(must(h.do("POST", "/Users", u), http.StatusCreated).body["id"]))
	}
	must(h.doAs("idp2", "s3cret-idp2", "POST", "/Users", scimUser("replay0@x.test", "replay0@x.test"), nil), http.StatusCreated)
	must(h.do("PATCH", "/Users/"+uids[0], patchBody(map[string]any{"op": "replace", "path": "active", "value": false})), http.StatusOK)
	must(h.do("PATCH", "/Users/"+uids[1], patchBody(map[string]any{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "moved1@x.test"})), http.StatusOK)
	put := oktaUser("replay2-renamed@x.test")
	must(h.do("PUT", "/Users/"+uids[2], put), http.StatusOK)
	g1 := str(must(h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "Eng", "externalId": "g-1",
		"members": []any{map[string]any{"value": uids[0]}, map[string]any{"value": uids[3]}}}), http.StatusCreated).body["id"])
	g2 := str(must(h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "Ops"}), http.StatusCreated).body["id"])
	must(h.do("PATCH", "/Groups/"+g1, patchBody(
		map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": uids[4]}}},
		map[string]any{"op": "replace", "path": "displayName", "value": "Engineering"})), http.StatusNoContent)
	must(h.do("PATCH", "/Groups/"+g1, patchBody(map[string]any{"op": "remove", "path": "members[value eq \"" + uids[0] + "\"]"})), http.StatusNoContent)
	must(h.do("PUT", "/Groups/"+g2, map[string]any{"schemas": []string{scimschema.Group}, "displayName": "Ops",
		"members": []any{map[string]any{"value": uids[3]}, map[string]any{"value": uids[5]}}}), http.StatusOK)
	must(h.do("DELETE", "/Users/"+uids[3], nil), http.StatusNoContent) // in both groups: their versions move
	must(h.do("DELETE", "/Users/"+uids[5], nil), http.StatusNoContent)
	g3 := str(must(h.do("POST", "/Groups", map[string]any{"schemas": []string{scimschema.Group}, "displayName": "Gone",
		"members": []any{map[string]any{"value": uids[4]}}}), http.StatusCreated).body["id"])
	must(h.do("DELETE", "/Groups/"+g3, nil), http.StatusNoContent)
	read := must(h.do("GET", "/Users?filter=userName%20eq%20%22replay4@x.test%22", nil), http.StatusOK) // a read: logged only
	h.eventsOf(read)                                                                                    // its log record (a log-only write, with a commit number) is in the stream
	h.waitDrained()
	h.stopService()

	var live, rebuilt bytes.Buffer
	if err := DumpFile(filepath.Join(h.cfg.DataDir, Name+".db"), &live); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "rebuilt.db")
	if err := Replay(context.Background(), h.js, out); err != nil {
		t.Fatalf("Replay = %v", err)
	}
	if err := DumpFile(out, &rebuilt); err != nil {
		t.Fatal(err)
	}
	if !IsDataFile(out) {
		t.Error("IsDataFile(rebuilt) = false")
	}
	if live.Len() == 0 || !strings.Contains(live.String(), "\n") {
		t.Fatal("live dump is empty")
	}
	if diff := cmp.Diff(strings.Split(live.String(), "\n"), strings.Split(rebuilt.String(), "\n")); diff != "" {
		t.Errorf("rebuilt dump differs from the live one (-live +rebuilt):\n%s", diff)
	}
	if err := Replay(context.Background(), h.js, out); err == nil {
		t.Error("Replay onto an existing file = nil, want an error")
	}
	// The commit counter continues where the live one stopped (log-only writes included).
	liveSeq, rebuiltSeq := commitSeq(t, filepath.Join(h.cfg.DataDir, Name+".db")), commitSeq(t, out)
	if liveSeq == 0 || rebuiltSeq != liveSeq {
		t.Errorf("commit counter: live %d, rebuilt %d; want equal and positive", liveSeq, rebuiltSeq)
	}
}

func commitSeq(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var seq uint64
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(commitBucket)); b != nil {
			seq = b.Sequence()
		}
		return nil
	})
	return seq
}
