package scimingest

import (
	"bytes"
	"net/http"

	"github.com/elimity-com/scim"
	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"

	"github.com/scimflow/scimflow/internal/fault"
	"github.com/scimflow/scimflow/services/scim-ingest/scimschema"
)

// discovery answers GET /ServiceProviderConfig, /Schemas[/{urn}] and /ResourceTypes[/{name}].
// Schemas and resource types come from the library (its documents are correct); the service provider
// configuration is written here because the library hard-codes etag:false and bulk's maxPayloadSize,
// and scimflow does support ETags.
func (s *server) discovery(w http.ResponseWriter, r *http.Request, rt route, info *reqInfo) error {
	base := s.scimBase(info.idp.ID)
	if rt.endpoint == "ServiceProviderConfig" {
		writeJSON(w, http.StatusOK, map[string]any{
			"schemas":          []string{scimschema.ServiceConfig},
			"documentationUri": "https://github.com/scimflow/scimflow/blob/main/docs/scim.md",
			"patch":            map[string]any{"supported": true},
			"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
			"filter":           map[string]any{"supported": true, "maxResults": s.cfg.MaxResults},
			"changePassword":   map[string]any{"supported": false},
			"sort":             map[string]any{"supported": false},
			"etag":             map[string]any{"supported": true},
			"authenticationSchemes": []any{map[string]any{
				"type": "oauthbearertoken", "name": "Bearer token", "primary": true,
				"description": "The IdP's SCIM secret as an HTTP Bearer token (Authorization: Bearer <secret>).",
			}},
			"meta": map[string]any{"resourceType": "ServiceProviderConfig", "location": base + "/ServiceProviderConfig"},
		})
		return nil
	}
	lib, err := scim.NewServer(&scim.ServerArgs{
		ServiceProviderConfig: &scim.ServiceProviderConfig{MaxResults: s.cfg.MaxResults, SupportFiltering: true, SupportPatch: true},
		ResourceTypes: []scim.ResourceType{
			{ID: optional.NewString("User"), Name: "User", Endpoint: "/Users", Description: optional.NewString("User Account"),
				Schema: s.sc.advertisedUser, SchemaExtensions: []scim.SchemaExtension{{Schema: schema.ExtensionEnterpriseUser()}}},
			{ID: optional.NewString("Group"), Name: "Group", Endpoint: "/Groups", Description: optional.NewString("Group"),
				Schema: s.sc.advertisedGroup},
		},
	}, scim.WithBaseURL(base))
	if err != nil {
		return err
	}
	// The library writes its own response; record it and copy it out so that headers, status and the
	// provisioning log stay this package's.
	rec := &recorder{header: http.Header{}, Code: http.StatusOK}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + rt.endpoint
	if rt.id != "" {
		r2.URL.Path += "/" + rt.id
	}
	r2.URL.RawPath = ""
	lib.ServeHTTP(rec, r2)
	if rec.Code >= 400 {
		return fault.E(fault.KindOf(rec.Code), "%s %q not found", rt.endpoint, rt.id)
	}
	writeRaw(w, rec.Code, rec.Body.Bytes())
	return nil
}

// recorder captures the library's response.
type recorder struct {
	header http.Header
	Code   int
	Body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.Body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.Code = code }
