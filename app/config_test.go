package app_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/scimflow/scimflow/app"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/services/auth"
)

// TestShippedConfigIsValid: scimflow.yaml, the documented defaults, loads and validates for serve.
func TestShippedConfigIsValid(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SCIMFLOW_ADMIN_TOKEN": strings.Repeat("x", 32)}
	f, err := app.Load(filepath.Join("..", "scimflow.yaml"), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("Load(scimflow.yaml) = %v", err)
	}
	if err := f.Validate(app.AllServices...); err != nil {
		t.Errorf("Validate(scimflow.yaml) = %v", err)
	}
}

// TestPermissionTableNamesServiceBuckets: the permission table repeats the services' bucket names
// (platform code does not import services); they must agree.
func TestPermissionTableNamesServiceBuckets(t *testing.T) {
	t.Parallel()
	if broker.BucketAuthKeys != auth.KVKeys || broker.BucketAuthLoginTxn != auth.KVLoginTxn || broker.BucketAuthReplicas != auth.KVReplicas {
		t.Errorf("broker buckets %q, %q, %q; auth uses %q, %q, %q", broker.BucketAuthKeys, broker.BucketAuthLoginTxn, broker.BucketAuthReplicas,
			auth.KVKeys, auth.KVLoginTxn, auth.KVReplicas)
	}
	if broker.ObjectAuthSnapshots != auth.BucketSnapshots {
		t.Errorf("broker object store %q; auth uses %q", broker.ObjectAuthSnapshots, auth.BucketSnapshots)
	}
}

// TestConfigErrors: NATS credentials, the key-encryption key and the admin token are checked at start.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env      map[string]string
		services []string
		want     string
	}{
		{map[string]string{"SCIMFLOW_ADMIN_TOKEN": "short"}, app.AllServices, "admin_token: 5 characters, want at least 32"},
		{map[string]string{"SCIMFLOW_NATS_URL": "nats://n:4222"}, []string{auth.Name}, "auth.key_encryption_key or auth.key_encryption_key_file: required"},
		{map[string]string{"SCIMFLOW_NATS_URL": "nats://n:4222", "SCIMFLOW_NATS_USER": "auth"}, []string{"scim-ingest"}, "nats.user and nats.password: set both"},
		{map[string]string{"SCIMFLOW_NATS_URL": "nats://n:4222", "SCIMFLOW_NATS_USER": "a", "SCIMFLOW_NATS_PASSWORD": "b", "SCIMFLOW_NATS_CREDENTIALS_FILE": "/f"}, []string{"scim-ingest"}, "choose one"},
		{map[string]string{"SCIMFLOW_NATS_URL": "nats://n:4222", "SCIMFLOW_NATS_TLS_CERT": "/c"}, []string{"scim-ingest"}, "nats.tls_cert and nats.tls_key"},
		{map[string]string{"SCIMFLOW_NATS_PASSWORD": "b", "SCIMFLOW_NATS_USER": "a"}, app.AllServices, "only with nats.url"},
		{map[string]string{"SCIMFLOW_AUTH_KEY_ENCRYPTION_KEY": "c2hvcnQ="}, app.AllServices, "auth.key_encryption_key: key 1 is not 32 bytes"},
	} {
		f, err := app.Load("", func(k string) (string, bool) { v, ok := c.env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(c.services...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%v) = %v, want an error containing %q", c.env, err, c.want)
		}
	}
}
