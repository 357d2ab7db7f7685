package identitystore

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/scimflow/scimflow/internal/fault"
)

// routes lists every endpoint of the admin API (docs/admin-api.md). All need the admin bearer token.
func (s *service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/identity_providers", s.createIdP)
	mux.HandleFunc("GET /api/v1/identity_providers", s.listIdPs)
	mux.HandleFunc("GET /api/v1/identity_providers/{id}", s.getIdP)
	mux.HandleFunc("PUT /api/v1/identity_providers/{id}", s.updateIdP)
	mux.HandleFunc("DELETE /api/v1/identity_providers/{id}", s.deleteIdP)
	mux.HandleFunc("POST /api/v1/identity_providers/{id}/refresh_scim_secret", s.refreshSecret)
	mux.HandleFunc("POST /api/v1/identity_providers/{id}/reset_sub_bindings", s.resetSubBindings)
	mux.HandleFunc("GET /api/v1/users", s.listUsers)
	mux.HandleFunc("GET /api/v1/users/{id}", s.getUser)
	mux.HandleFunc("POST /api/v1/users/{id}/revoke", s.revokeUser)
	mux.HandleFunc("DELETE /api/v1/users/{id}/seat", s.removeSeat)
	mux.HandleFunc("POST /api/v1/users/{id}/unlock", s.unlockUser)
	mux.HandleFunc("DELETE /api/v1/users/{id}/sub", s.resetSub)
	mux.HandleFunc("GET /api/v1/logs/scim", s.scimLogs)
	mux.HandleFunc("GET /api/v1/access/apps", s.listApps)
	mux.HandleFunc("POST /api/v1/access/apps", s.createApp)
	mux.HandleFunc("POST /api/v1/access/apps/test", s.testDraftApp)
	mux.HandleFunc("GET /api/v1/access/apps/{id}", s.getApp)
	mux.HandleFunc("PUT /api/v1/access/apps/{id}", s.updateApp)
	mux.HandleFunc("DELETE /api/v1/access/apps/{id}", s.deleteApp)
	mux.HandleFunc("POST /api/v1/access/apps/{id}/test", s.testSavedApp)
	mux.HandleFunc("GET /api/v1/logs/access", s.accessLogs)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, s.d.Log(), fault.E(fault.NotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s.authenticate(mux)
}

// authenticate checks the admin bearer token in constant time (comparing digests, so lengths match).
func (s *service) authenticate(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(s.token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			writeError(w, r, s.d.Log(), fault.E(fault.NotFound, "not found"))
			return
		}
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scimflow admin"`)
			writeError(w, r, s.d.Log(), fault.E(fault.Unauthorized, "missing or invalid admin token"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		next.ServeHTTP(w, r)
	})
}
