package app

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/services/auth"
)

// natsConnector returns how this process's services reach NATS, each as its own role:
//
//   - nats.url empty (serve): the embedded server, which accepts only the per-role nkeys kept in
//     nats.credentials_dir (generated when missing) with the permission table enforced, whether or
//     not nats.listen exposes it; the in-process connections authenticate with the same files, so
//     what the tests run is what a separate service connecting to nats.listen meets.
//   - nats.url set: the configured credential (nats.user/password or nats.credentials_file) and TLS
//     files, for every service this process runs.
func natsConnector(f File, log *slog.Logger) (connect func(name string, role broker.Role) (*nats.Conn, error), shutdown func(), err error) {
	if f.NATS.URL == "" {
		dir := EmbeddedCredentialsDir(f)
		creds, created, err := broker.RoleSeeds(dir)
		if err != nil {
			return nil, nil, err
		}
		if len(created) > 0 {
			log.Info("generated NATS credentials, one nkey seed per role; a separate service connecting to nats.listen uses its role's file as nats.credentials_file",
				"dir", dir, "files", created)
		}
		emb, err := broker.StartEmbedded(broker.EmbeddedConfig{StoreDir: filepath.Join(f.DataDir, "nats"), Listen: f.NATS.Listen, Users: creds}, log)
		if err != nil {
			return nil, nil, err
		}
		return func(name string, role broker.Role) (*nats.Conn, error) {
			opts, err := creds[role].ClientOptions(role)
			if err != nil {
				return nil, err
			}
			return emb.Connect(name, append(opts, errorHandler(log.With("service", string(role))))...)
		}, emb.Shutdown, nil
	}
	cred, err := f.NATS.Credential()
	if err != nil {
		return nil, nil, err
	}
	if cred.IsZero() {
		log.Warn("connecting to NATS without credentials: anyone who can reach it can read and write every stream; see docs/security.md", "url", f.NATS.URL)
	}
	return func(name string, role broker.Role) (*nats.Conn, error) {
		opts, err := cred.ClientOptions(role)
		if err != nil {
			return nil, err
		}
		return broker.Connect(f.NATS.URL, name, log.With("service", string(role)), opts...)
	}, func() {}, nil
}

// EmbeddedCredentialsDir is where serve keeps its per-role NATS credentials.
func EmbeddedCredentialsDir(f File) string {
	if f.NATS.CredentialsDir != "" {
		return f.NATS.CredentialsDir
	}
	return filepath.Join(f.DataDir, "nats-credentials")
}

// Credential is the configured client credential (nats.url only).
func (n NATSConfig) Credential() (broker.Credential, error) {
	c := broker.Credential{User: n.User, Password: n.Password, TLSCA: n.TLSCA, TLSCert: n.TLSCert, TLSKey: n.TLSKey}
	if n.CredentialsFile != "" {
		seed, err := broker.ReadSeedFile(n.CredentialsFile)
		if err != nil {
			return broker.Credential{}, err
		}
		c.Seed = seed
	}
	return c, nil
}

// errorHandler logs what the server refuses asynchronously (a subscription outside the role's
// permissions), which would otherwise only show as a request timing out.
func errorHandler(log *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			log.Error("nats refused an operation: a row is missing from the permission table (internal/broker/permissions.go)", "err", err)
			return
		}
		log.Error("nats error", "err", fmt.Sprint(err))
	})
}

// ensureKEK gives serve with its embedded NATS a key-encryption key when none is configured:
// data_dir/auth-kek, generated once (mode 0600). Only then may one be generated: with nats.url,
// other auth replicas must share it, so the configuration must name it (Validate).
func (f *File) ensureKEK(services []string, log *slog.Logger) error {
	if f.NATS.URL != "" || f.Auth.KeyEncryptionKey != "" || f.Auth.KeyEncryptionKeyFile != "" || !slices.Contains(services, auth.Name) {
		return nil
	}
	path := filepath.Join(f.DataDir, "auth-kek")
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		_, werr := file.WriteString("# scimflow auth key-encryption key (docs/security.md). Keep it secret; a second auth replica needs it too.\n" + auth.NewKeyEncryptionKey() + "\n")
		if cerr := file.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("write %s: %w", path, werr)
		}
		log.Info("generated the auth key-encryption key; other auth replicas need it as auth.key_encryption_key_file", "path", path)
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("auth key-encryption key %s: %w", path, err)
	}
	f.Auth.KeyEncryptionKeyFile = path
	return nil
}
