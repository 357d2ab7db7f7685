package auth

import "net/http"

// routes lists every endpoint of auth (docs/design.md §5). /healthz, /readyz and /metrics are added by
// the platform.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.handleLogin)
	mux.HandleFunc("GET /test", s.handleTest)
	mux.HandleFunc("GET /callback", s.handleCallback)
	mux.HandleFunc("GET /logout", s.handleLogout)
	mux.HandleFunc("POST /logout", s.handleLogout)
	mux.HandleFunc("GET /certs", s.handleCerts)
	mux.HandleFunc("GET /get-identity", s.handleGetIdentity)
	// Any method: nginx's auth_request subrequest keeps the original request's method.
	mux.HandleFunc("/verify", s.handleVerify)
	mux.HandleFunc("GET /{$}", s.handleIndex)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The listener is up before start has loaded keys and consumers (health answers at once);
		// the auth endpoints wait for it. The atomic also orders start's writes before every read.
		if !s.up.Load() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	})
}
