package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Credential is how one client authenticates to NATS: a user name and password, or an nkey user
// seed (the server then knows only the public key). The TLS files are for a TLS listener: TLSCA
// verifies the server, TLSCert and TLSKey are the client certificate when the server asks for one.
type Credential struct {
	User     string
	Password string
	Seed     []byte // nkey user seed ("SU…"); when set, User and Password are unused
	TLSCA    string
	TLSCert  string
	TLSKey   string
}

// IsZero reports whether the credential authenticates at all (TLS files alone do not).
func (c Credential) IsZero() bool { return c.User == "" && len(c.Seed) == 0 }

// ClientOptions returns the nats.go options that authenticate as c and keep replies under role's
// inbox prefix (the only place a role may subscribe).
func (c Credential) ClientOptions(role Role) ([]nats.Option, error) {
	var opts []nats.Option
	if role != "" {
		opts = append(opts, nats.CustomInboxPrefix(role.InboxPrefix()))
	}
	switch {
	case len(c.Seed) > 0:
		kp, err := nkeys.FromSeed(c.Seed)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed: %w", err)
		}
		opts = append(opts, nats.Nkey(pub, kp.Sign))
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" || c.TLSKey != "" {
		if c.TLSCert == "" || c.TLSKey == "" {
			return nil, errors.New("nats tls: tls_cert and tls_key go together")
		}
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// ReadSeedFile reads an nkey user seed from path (the seed alone, or a .creds-style file that
// contains one).
func ReadSeedFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats credentials_file: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("nats credentials_file %s: no nkey seed: %w", path, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("nats credentials_file %s: %w", path, err)
	}
	if len(seed) < 2 || seed[0] != 'S' || seed[1] != 'U' {
		return nil, fmt.Errorf("nats credentials_file %s: not a user nkey seed (SU…)", path)
	}
	return seed, nil
}

// RoleSeeds returns one nkey credential per role from dir/<role>.nk, generating the missing ones
// (directory 0700, files 0600). `serve` uses them for its embedded server and its own connections;
// a separate service pointed at that server uses the same file as nats.credentials_file. created
// lists the files written now.
func RoleSeeds(dir string) (creds map[Role]Credential, created []string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("nats credentials dir: %w", err)
	}
	creds = map[Role]Credential{}
	for _, r := range Roles {
		path := RoleSeedPath(dir, r)
		seed, err := ReadSeedFile(path)
		if errors.Is(err, os.ErrNotExist) {
			kp, kerr := nkeys.CreateUser()
			if kerr != nil {
				return nil, nil, kerr
			}
			if seed, kerr = kp.Seed(); kerr != nil {
				return nil, nil, kerr
			}
			if werr := writeExclusive(path, append(append([]byte{}, seed...), '\n')); werr != nil {
				return nil, nil, werr
			}
			created = append(created, path)
		} else if err != nil {
			return nil, nil, err
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, nil, fmt.Errorf("nats credentials file %s is readable by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
		}
		creds[r] = Credential{Seed: seed}
	}
	return creds, created, nil
}

// RoleSeedPath is where RoleSeeds keeps role's seed.
func RoleSeedPath(dir string, r Role) string { return filepath.Join(dir, string(r)+".nk") }

func writeExclusive(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// serverUsers turns per-role credentials into the server's users with the table's permissions.
func serverUsers(users map[Role]Credential, table []Grant) ([]*server.User, []*server.NkeyUser, error) {
	var us []*server.User
	var nus []*server.NkeyUser
	for _, r := range Roles {
		c, ok := users[r]
		if !ok {
			continue
		}
		perms := RolePermissions(r, table)
		switch {
		case len(c.Seed) > 0:
			kp, err := nkeys.FromSeed(c.Seed)
			if err != nil {
				return nil, nil, fmt.Errorf("role %s: %w", r, err)
			}
			pub, err := kp.PublicKey()
			if err != nil {
				return nil, nil, fmt.Errorf("role %s: %w", r, err)
			}
			nus = append(nus, &server.NkeyUser{Nkey: pub, Permissions: perms})
		case c.User != "" && c.Password != "":
			us = append(us, &server.User{Username: c.User, Password: c.Password, Permissions: perms})
		default:
			return nil, nil, fmt.Errorf("role %s: credential has neither an nkey seed nor a user and password", r)
		}
	}
	return us, nus, nil
}
