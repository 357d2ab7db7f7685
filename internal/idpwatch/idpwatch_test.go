package idpwatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/internal/idpwatch"
	"github.com/scimflow/scimflow/testkit/natstest"
)

// TestWatcherFailsClosed: the key is the IdP id, a deleted key removes the IdP, and an entry that
// does not decode disables it (the rule every service shares) until it is saved again.
func TestWatcherFailsClosed(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, broker.KVIdPConfig)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id string, v any) {
		t.Helper()
		b, ok := v.([]byte)
		if !ok {
			b, _ = json.Marshal(v)
		}
		if _, err := kv.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	put("a", events.IdP{ID: "not-the-key", Name: "A"}) // present before the watch starts

	var mu sync.Mutex
	state := map[string]string{}
	w := idpwatch.New(kv, func(id string, idp *events.IdP) {
		mu.Lock()
		defer mu.Unlock()
		if idp == nil {
			delete(state, id)
			return
		}
		state[id] = idp.ID + "/" + idp.Name
	}, nil)
	go w.Run(ctx)
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	want := func(exp map[string]string) {
		t.Helper()
		natstest.WaitFor(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(state) != fmt.Sprint(exp) {
				return fmt.Errorf("state = %v, want %v", state, exp)
			}
			return nil
		})
	}
	want(map[string]string{"a": "a/A"}) // the key wins over the value's id
	put("b", events.IdP{Name: "B"})
	want(map[string]string{"a": "a/A", "b": "b/B"})
	put("a", []byte(`{"name": 42`)) // does not decode: A is disabled, not kept at its old version
	want(map[string]string{"b": "b/B"})
	put("a", events.IdP{Name: "A2"})
	want(map[string]string{"a": "a/A2", "b": "b/B"})
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	want(map[string]string{"a": "a/A2"})
	if !w.Synced() {
		t.Error("Synced() = false after WaitSynced")
	}
}
