package scimingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/boltdb"
	"github.com/scimflow/scimflow/internal/config"
	"github.com/scimflow/scimflow/internal/httpserv"
	"github.com/scimflow/scimflow/internal/outbox"
	"github.com/scimflow/scimflow/internal/platform"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// fuzzServer is scim-ingest's HTTP handler in-process on a real bbolt file, without NATS: the outbox
// relay never runs, so every committed event stays in the outbox, where the fuzz targets read what a
// request caused. One server serves every input of a fuzzing run (a harness per input would spend
// the run starting JetStream). No Recover middleware: a panic fails the target.
type fuzzServer struct {
	s        *server
	h        http.Handler
	db       *bolt.DB
	uid, gid string // a user and a group that PUT and PATCH inputs address
}

const fuzzSecret = "fuzz-secret"

func newFuzzServer(t testing.TB) *fuzzServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = fuzzDir(t)
	cfg.RateLimit = 0
	cfg.OutboxMaxDepth = 1 << 62
	cfg.AdmissionMaxLag = config.Duration(1 << 62) // nothing is ever published here: the outbox only ages
	db, err := boltdb.Open(filepath.Join(cfg.DataDir, Name+".db"), append([]string{outbox.Bucket}, allBuckets...)...)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(db, nil, outbox.RelayConfig{MetricsPrefix: "fuzz"}, nil, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(cfg, platform.Deps{Logger: log}, db, relay)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(fuzzSecret))
	s.idps["idp1"] = events.IdP{ID: "idp1", Name: "idp1", Type: "oidc", SCIMConfig: events.SCIMConfig{
		Enabled: true, UserDeprovision: true, IdentityUpdateBehavior: events.UpdateAutomatic, SecretSHA256: hex.EncodeToString(sum[:])}}
	s.loaded = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.commits.Run(ctx); close(done) }()
	t.Cleanup(func() { s.logs.flushNow(); cancel(); <-done; db.Close() })
	f := &fuzzServer{s: s, h: httpserv.RequestID(s.routes()), db: db}
	f.uid = f.create(t, "/Users", `{"schemas":["`+scimschema.User+`"],"userName":"fuzz-target@x.test","emails":[{"type":"work","value":"fuzz-target@x.test"}]}`)
	f.create(t, "/Users", `{"schemas":["`+scimschema.User+`"],"userName":"fuzz-other@x.test"}`)
	f.gid = f.create(t, "/Groups", `{"schemas":["`+scimschema.Group+`"],"displayName":"fuzz group","members":[{"value":"`+f.uid+`"}]}`)
	f.settle()
	f.resourceEvents(t, "")
	return f
}

// fuzzDir is a temporary directory on tmpfs when there is one. bbolt keeps its production options
// (fsync on every commit); on tmpfs an fsync costs nothing, so a fuzzing run measures the handler, not
// the disk (on this project's CI machines a commit's fsync takes tens of milliseconds).
func fuzzDir(t testing.TB) string {
	if dir, err := os.MkdirTemp("/dev/shm", "scim-ingest-fuzz-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return t.TempDir()
}

func (f *fuzzServer) create(t testing.TB, path, body string) string {
	t.Helper()
	rec := f.do("POST", path, []byte(body))
	var m map[string]any
	json.Unmarshal(rec.Body.Bytes(), &m)
	if rec.Code != http.StatusCreated {
		t.Fatalf("POST %s = %d %s", path, rec.Code, rec.Body)
	}
	return str(m["id"])
}

func (f *fuzzServer) do(method, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/populations/idp1/scim/v2"+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+fuzzSecret)
	req.Header.Set("Content-Type", "application/scim+json")
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

// resourceEvents returns the types of the resource events (not scimlog records) in the outbox with
// correlation id reqID, and deletes every record it read: the relay that would publish them never
// runs, and a long fuzzing run must not grow the file without bound. A change commits before its
// response is written, so its events are all in the outbox when the handler returns.
func (f *fuzzServer) resourceEvents(t testing.TB, reqID string) []string {
	t.Helper()
	var out []string
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(outbox.Bucket))
		var read [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			read = append(read, bytes.Clone(k))
			var rec struct {
				Subject string          `json:"subject"`
				Data    json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			e, err := events.Decode(rec.Subject, rec.Data)
			if err != nil {
				return err
			}
			if e.CorrelationID == reqID && e.Type != events.TypeSCIMLog {
				out = append(out, e.Type)
			}
		}
		for _, k := range read {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return out
}

// check asserts what every answer to a fuzzed body must hold: no 5xx other than 503, JSON without
// nulls on success, an RFC 7644 error body on every 4xx, and no resource event for a rejected request.
func (f *fuzzServer) check(t *testing.T, method, path string, body []byte) *httptest.ResponseRecorder {
	rec := f.do(method, path, body)
	code := rec.Code
	if code >= 500 && code != http.StatusServiceUnavailable {
		t.Fatalf("%s %s %q = %d %s", method, path, body, code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); rec.Body.Len() > 0 && !strings.HasPrefix(ct, "application/scim+json") {
		t.Fatalf("%s %s %q: Content-Type %q", method, path, body, ct)
	}
	evs := f.resourceEvents(t, rec.Header().Get("X-Request-Id"))
	if code < 400 {
		if rec.Body.Len() > 0 {
			var doc any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatalf("%s %s %q = %d with a body that is not JSON: %s", method, path, body, code, rec.Body)
			}
			if p := nullAt(doc, ""); p != "" {
				t.Fatalf("%s %s %q = %d with a null at %s: %s", method, path, body, code, p, rec.Body)
			}
		}
		return rec
	}
	var e struct {
		Schemas  []string `json:"schemas"`
		Status   string   `json:"status"`
		ScimType string   `json:"scimType"`
		Detail   string   `json:"detail"`
	}
	d := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil || len(e.Schemas) != 1 || e.Schemas[0] != scimschema.Error || e.Status != strconv.Itoa(code) || e.Detail == "" {
		t.Fatalf("%s %s %q = %d with a body that is not a SCIM error: %s", method, path, body, code, rec.Body)
	}
	if len(evs) > 0 {
		t.Fatalf("%s %s %q = %d, yet it published %v", method, path, body, code, evs)
	}
	return rec
}

// fuzzSeeds adds the bodies of the conformance fixtures that address endpoint (their ids replaced by
// the fuzz server's) and of TestOddBodiesNeverFail5xx's kind, for each method.
func fuzzSeeds(f *testing.F, endpoint string) {
	files, _ := filepath.Glob(filepath.Join("testdata", "conformance", "*", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var fx fixture
		if err := json.Unmarshal(b, &fx); err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		p := strings.ToLower(strings.TrimLeft(fx.Request.Path, "/"))
		if !strings.HasPrefix(p, strings.ToLower(endpoint)) {
			continue
		}
		var body string
		switch {
		case fx.Request.RawBody != nil:
			body = *fx.Request.RawBody
		case len(fx.Request.Body) > 0:
			body = string(fx.Request.Body)
		default:
			continue
		}
		for i, m := range fuzzMethods {
			if m == fx.Request.Method {
				f.Add(uint8(i), []byte(body))
			}
		}
	}
	for _, b := range []string{``, `null`, `{}`, `[]`, `{"Operations":[null]}`, `{"schemas":[1]}`,
		`{"Operations":[{"op":"add","path":"members","value":[{"value":null}]}]}`,
		`{"Operations":[{"op":"replace","path":"emails[type eq \"work\"].value","value":{"a":1}}]}`} {
		for i := range fuzzMethods {
			f.Add(uint8(i), []byte(b))
		}
	}
}

var fuzzMethods = []string{"POST", "PUT", "PATCH"}

// fuzzBody sends body with the method chosen by m to the endpoint's collection (POST) or to the
// fuzz server's resource (PUT, PATCH). {{name}} references left in seeds become the resource's id.
func fuzzBody(t *testing.T, srv *fuzzServer, endpoint string, m uint8, body []byte) {
	method := fuzzMethods[int(m)%len(fuzzMethods)]
	id := srv.uid
	if endpoint == "Groups" {
		id = srv.gid
	}
	body = varRef.ReplaceAll(body, []byte(srv.uid))
	path := "/" + endpoint
	if method != "POST" {
		path += "/" + id
	}
	rec := srv.check(t, method, path, body)
	if rec.Code == http.StatusCreated {
		// Delete what a POST created, so that the store stays the size of the seeds however long
		// the run, and a later input may create the same name again.
		var m map[string]any
		json.Unmarshal(rec.Body.Bytes(), &m)
		if d := srv.do("DELETE", "/"+endpoint+"/"+str(m["id"]), nil); d.Code != http.StatusNoContent {
			t.Fatalf("DELETE of the resource %q created = %d %s", body, d.Code, d.Body)
		}
	}
	srv.settle()
	srv.resourceEvents(t, "")
}

// settle commits the request's buffered provisioning-log record before the next input: the barrier
// is an empty write, which the committer runs after everything queued before it. Without it the
// log flush ran in the background during later inputs, and the coverage the fuzzer saw for an input
// varied from run to run, which kept it minimizing instead of fuzzing.
func (f *fuzzServer) settle() {
	f.s.logs.flushNow()
	f.s.commits.Update(context.Background(), func(*bolt.Tx) error { return nil })
}

// FuzzUsersBody sends arbitrary POST, PUT and PATCH bodies to /Users through the HTTP handler.
func FuzzUsersBody(f *testing.F) {
	fuzzSeeds(f, "Users")
	srv := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, m uint8, body []byte) { fuzzBody(t, srv, "Users", m, body) })
}

// FuzzGroupsBody sends arbitrary POST, PUT and PATCH bodies to /Groups through the HTTP handler.
func FuzzGroupsBody(f *testing.F) {
	fuzzSeeds(f, "Groups")
	srv := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, m uint8, body []byte) { fuzzBody(t, srv, "Groups", m, body) })
}
