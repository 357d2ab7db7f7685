package auth

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimflow/scimflow/testkit/oidctest"
)

// benchClients is the number of concurrent keep-alive connections of the load generator.
const benchClients = 64

// load sends n GET requests to u from benchClients concurrent clients on keep-alive connections and
// returns how long they took. Every response must have status want.
func load(b *testing.B, u string, cookie *http.Cookie, hdr map[string]string, n, want int) time.Duration {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: benchClients, MaxConnsPerHost: benchClients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var next atomic.Int64
	var bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range benchClients {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			if cookie != nil {
				req.AddCookie(cookie)
			}
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			for next.Add(1) <= int64(n) {
				resp, err := client.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if bad.Load() > 0 {
		b.Fatalf("%s: %d of %d requests failed or had the wrong status", u, bad.Load(), n)
	}
	return elapsed
}

// BenchmarkVerify measures /verify with a valid session (64 concurrent clients on loopback) against
// a hello-world net/http handler in the same run, and reports both rates and their ratio. Run with
// e.g. -bench Verify -benchtime 200000x.
func BenchmarkVerify(b *testing.B) { benchVerify(b, 0) }

// BenchmarkVerifyManyGroups is BenchmarkVerify with the session of BenchmarkVerifyPolicies (50
// groups) and no access applications: the control that separates the cost of the policies from the
// cost of the larger answer (groups header and app token).
func BenchmarkVerifyManyGroups(b *testing.B) { benchVerify(b, 50) }

func benchVerify(b *testing.B, groups int) {
	h := newHarness(b, harnessOpts{})
	tok := h.mustLogin(newBrowser(), h.r, "idp-a")
	if groups > 0 {
		var names []string
		for g := range groups {
			names = append(names, fmt.Sprintf("Group %d", g))
		}
		if err := h.op.AddUser(oidctest.User{Sub: "many", Email: "many@example.com", Name: "Many Groups", Groups: names}); err != nil {
			b.Fatal(err)
		}
		tok = h.loginAs(h.op, "many")
	}
	hello := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("hello, world\n"))
	}))
	defer hello.Close()
	n := max(b.N, 1000)
	cookie := &http.Cookie{Name: h.r.srv.sessionName, Value: tok}
	fwd := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Uri": "/"}
	// Warm both servers (connections, session cache) before measuring.
	load(b, hello.URL, nil, nil, 2000, http.StatusOK)
	load(b, h.r.url+"/verify", cookie, fwd, 2000, http.StatusOK)
	// Interleave rounds so that load from other processes on a shared machine hits both alike.
	const rounds = 10
	per := max(n/rounds, 100)
	var helloT, verifyT time.Duration
	b.ResetTimer()
	for range rounds {
		helloT += load(b, hello.URL, nil, nil, per, http.StatusOK)
		verifyT += load(b, h.r.url+"/verify", cookie, fwd, per, http.StatusOK)
	}
	b.StopTimer()
	helloRate := float64(per*rounds) / helloT.Seconds()
	verifyRate := float64(per*rounds) / verifyT.Seconds()
	b.ReportMetric(verifyRate, "verify_req/s")
	b.ReportMetric(helloRate, "hello_req/s")
	b.ReportMetric(verifyRate/helloRate, "ratio")
}
