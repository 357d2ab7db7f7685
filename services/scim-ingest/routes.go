package scimingest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/internal/httpserv"
)

// routes lists every route of the service. Everything under an IdP's SCIM base goes through serve,
// which resolves the IdP, authenticates, applies the limits, dispatches by endpoint and records the
// request in the provisioning log and the metrics.
//
//	/populations/{idp}/scim/v2/ServiceProviderConfig      GET
//	/populations/{idp}/scim/v2/Schemas[/{urn}]            GET
//	/populations/{idp}/scim/v2/ResourceTypes[/{name}]     GET
//	/populations/{idp}/scim/v2/Users                      GET (list, filter), POST
//	/populations/{idp}/scim/v2/Users/{id}                 GET, PUT, PATCH, DELETE
//	/populations/{idp}/scim/v2/Groups                     GET (list, filter), POST
//	/populations/{idp}/scim/v2/Groups/{id}                GET, PUT, PATCH, DELETE
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/populations/{idp}/scim/v2", s.serve)
	mux.HandleFunc("/populations/{idp}/scim/v2/{rest...}", s.serve)
	return mux
}

// route is a request's endpoint after path normalisation.
type route struct {
	endpoint string // Users, Groups, ServiceProviderConfig, Schemas, ResourceTypes, or "" (unknown)
	id       string // resource id, schema URN or resource type name; "" for the collection
}

// parseRoute normalises the path below the SCIM base: trailing and doubled slashes are dropped
// (Entra's GET /Users/?filter= must list, not look up id ""), and endpoint names match in any case.
func parseRoute(rest string) route {
	parts := strings.FieldsFunc(rest, func(r rune) bool { return r == '/' })
	if len(parts) == 0 || len(parts) > 2 {
		return route{}
	}
	var rt route
	for _, e := range []string{"Users", "Groups", "ServiceProviderConfig", "Schemas", "ResourceTypes"} {
		if strings.EqualFold(parts[0], e) {
			rt.endpoint = e
		}
	}
	if len(parts) == 2 {
		rt.id = parts[1]
		if rt.endpoint == "ServiceProviderConfig" {
			return route{}
		}
	}
	return rt
}

func (rt route) resourceKind() string {
	switch rt.endpoint {
	case "Users":
		return kindUser
	case "Groups":
		return kindGroup
	}
	return ""
}

// reqInfo is what a request tells the provisioning log, filled in as the request goes.
type reqInfo struct {
	requestID  string
	idp        events.IdP
	authed     bool
	kind       string // USER, GROUP or ""
	resourceID string
	externalID string
	email      string
	groupName  string
	errDetail  string
	body       []byte
	logged     bool   // the log record was committed with the change
	failedIdP  string // the configured IdP whose secret the request failed; "" for no such IdP
}

type infoKey struct{}

func infoFrom(r *http.Request) *reqInfo {
	i, _ := r.Context().Value(infoKey{}).(*reqInfo)
	return i
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	info := &reqInfo{requestID: httpserv.RequestIDFrom(r.Context())}
	if info.requestID == "" {
		info.requestID = httpserv.NewRequestID()
	}
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	sw := &statusWriter{ResponseWriter: w}
	rt := parseRoute(r.PathValue("rest"))
	info.kind = rt.resourceKind()
	if err := s.handle(sw, r, rt, info); err != nil {
		s.writeError(sw, r, err)
	}
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	idpLabel := "unknown"
	if info.authed {
		idpLabel = info.idp.ID
	}
	resLabel := rt.endpoint
	if resLabel == "" {
		resLabel = "other"
	}
	method := r.Method // label values stay bounded whatever clients send
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		method = "other"
	}
	s.m.requests.WithLabelValues(idpLabel, method, resLabel, strconv.Itoa(status)).Inc()
	s.m.latency.WithLabelValues(method, resLabel).Observe(s.now().Sub(start).Seconds())
	if !info.authed {
		// Not this IdP's request (it may not even be the IdP): never on a stream, and logged only as
		// one aggregated entry per IdP per minute (authfail.go). 503 while starting is no failure.
		if status == http.StatusUnauthorized || status == http.StatusNotFound {
			s.authErr.add(info.failedIdP)
		}
		return
	}
	if info.logged {
		return
	}
	// Requests that changed nothing have their log record committed in the background, batched with
	// others, so the client (and the next request on its connection) never waits for that fsync.
	s.logs.add(s.logEvent(r, info, status, start))
}

// handle applies the checks every request passes, in order: IdP exists (404), bearer secret (401),
// rate limit (429), body size (413), admission control for writes (429 for bulk writes while the
// pipeline lags, admission.go); then dispatches.
func (s *server) handle(w http.ResponseWriter, r *http.Request, rt route, info *reqInfo) error {
	idpID := r.PathValue("idp")
	idp, ok, loaded := s.lookupIdP(idpID)
	if !loaded {
		return &fault.Error{Kind: fault.Unavailable, Message: "starting", RetryAfter: time.Second}
	}
	if !ok || !events.ValidToken(idpID) {
		return fault.E(fault.NotFound, "no SCIM endpoint here")
	}
	if !s.authenticate(r, idp) {
		info.failedIdP = idp.ID
		return fault.E(fault.Unauthorized, "missing or invalid bearer token")
	}
	info.idp, info.authed = idp, true
	if wait, ok := s.allow(idp.ID); !ok {
		return &fault.Error{Kind: fault.RateLimited, Message: "rate limit exceeded for this IdP", RetryAfter: max(wait, retryAfter)}
	}
	write := r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch || r.Method == http.MethodDelete
	if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		body, err := s.readBody(w, r)
		if err != nil {
			return err
		}
		info.body = body
	}
	if write && (rt.endpoint == "Users" || rt.endpoint == "Groups") {
		reauth := events.PolicyOf(idp.SCIMConfig).IdentityUpdateBehavior == events.UpdateReauth
		if err := s.adm.check(securityWrite(r.Method, rt.resourceKind(), rt.id != "", info.body, reauth)); err != nil {
			return err
		}
	}
	return s.dispatch(w, r, rt, info)
}

// readBody reads at most MaxBodyBytes; a longer body is refused with 413 without reading the rest.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, fault.E(fault.TooLarge, "request body larger than %d bytes", s.cfg.MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fault.E(fault.TooLarge, "request body larger than %d bytes", s.cfg.MaxBodyBytes)
		}
		return nil, fault.Coded(fault.Invalid, scimInvalidSyntax, "reading the request body failed")
	}
	return body, nil
}

func methodNotAllowed(allowed string) error {
	return fault.E(fault.MethodNotAllowed, "method not allowed; allowed: %s", allowed)
}

func (s *server) dispatch(w http.ResponseWriter, r *http.Request, rt route, info *reqInfo) error {
	switch rt.endpoint {
	case "ServiceProviderConfig", "Schemas", "ResourceTypes":
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			return methodNotAllowed("GET")
		}
		return s.discovery(w, r, rt, info)
	case "Users", "Groups":
		kind := rt.resourceKind()
		if rt.id == "" {
			switch r.Method {
			case http.MethodGet:
				return s.list(w, r, kind, info)
			case http.MethodPost:
				if kind == kindUser {
					return s.createUser(w, r, info)
				}
				return s.createGroup(w, r, info)
			}
			w.Header().Set("Allow", "GET, POST")
			return methodNotAllowed("GET, POST")
		}
		info.resourceID = rt.id
		switch r.Method {
		case http.MethodGet:
			return s.get(w, r, kind, rt.id, info)
		case http.MethodPut:
			if kind == kindUser {
				return s.replaceUser(w, r, rt.id, info)
			}
			return s.replaceGroup(w, r, rt.id, info)
		case http.MethodPatch:
			if kind == kindUser {
				return s.patchUser(w, r, rt.id, info)
			}
			return s.patchGroup(w, r, rt.id, info)
		case http.MethodDelete:
			if kind == kindUser {
				return s.deleteUser(w, r, rt.id, info)
			}
			return s.deleteGroup(w, r, rt.id, info)
		}
		w.Header().Set("Allow", "GET, PUT, PATCH, DELETE")
		return methodNotAllowed("GET, PUT, PATCH, DELETE")
	}
	return fault.E(fault.NotFound, "no such SCIM endpoint")
}

// logEvent builds the provisioning-log record of a request.
func (s *server) logEvent(r *http.Request, info *reqInfo, status int, at time.Time) events.Event {
	l := events.SCIMLog{
		RequestID: info.requestID, Method: r.Method, Path: r.URL.Path, ResourceType: info.kind,
		ResourceID: info.resourceID, ResourceIdPID: info.externalID, ResourceUserEmail: info.email,
		ResourceGroupName: info.groupName, HTTPStatus: status, Status: events.LogSuccess,
		RequestBody: redactBody(info.body),
	}
	if status >= 400 {
		l.Status = events.LogError
		l.ErrorDescription = info.errDetail
		if l.ErrorDescription == "" {
			l.ErrorDescription = http.StatusText(status)
		}
	}
	return events.New(info.idp.ID, at, info.requestID, "", l)
}
