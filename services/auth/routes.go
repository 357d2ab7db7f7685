package auth

import "net/http"

// routes lists every endpoint of auth (DESIGN.md §5). /healthz, /readyz and /metrics are added by
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
	return mux
}
