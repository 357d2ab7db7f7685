package identitystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/scimflow/scimflow/events"
	"github.com/scimflow/scimflow/internal/broker"
	"github.com/scimflow/scimflow/services/identity-store/console"
)

// validateConsole checks the console_* settings of Config.
func (c Config) validateConsole() []error {
	var errs []error
	if (c.ConsoleAdminIdP == "") != (c.ConsoleAdminGroup == "") {
		errs = append(errs, errors.New("identity_store.console_admin_idp and console_admin_group: set both (OIDC sign-in to the console) or neither"))
	}
	if c.ConsoleAdminIdP != "" && c.AuthURL == "" {
		errs = append(errs, errors.New("identity_store.console_admin_idp: needs auth.external_url (the issuer of app tokens)"))
	}
	for name, v := range map[string]string{"console_prometheus_url": c.ConsolePrometheusURL, "console_certs_url": c.ConsoleCertsURL} {
		if v != "" && !absoluteURL(v) {
			errs = append(errs, fmt.Errorf("identity_store.%s: %q is not an absolute http(s) URL", name, v))
		}
	}
	if c.ConsoleSessionTTL < 0 {
		errs = append(errs, errors.New("identity_store.console_session_ttl: must not be negative"))
	}
	return errs
}

// handler is the admin listener's handler: the console under /ui/, the admin API elsewhere.
func (s *service) handler() (http.Handler, error) {
	api := s.routes()
	aud := s.cfg.ConsoleAppAudience
	con, err := console.New(console.Config{
		AdminIdP: s.cfg.ConsoleAdminIdP, AdminGroup: s.cfg.ConsoleAdminGroup, AuthURL: s.cfg.AuthURL, CertsURL: s.cfg.ConsoleCertsURL,
		AppAudience: aud, PrometheusURL: s.cfg.ConsolePrometheusURL, SessionTTL: s.cfg.ConsoleSessionTTL.D(), SecretGrace: s.cfg.SecretGrace,
	}, console.Backend{
		API: api, Token: s.token, JS: s.d.JS, Stats: s.consoleStats, Streams: slices.Sorted(maps.Keys(events.StreamSubjects)),
		Log: s.d.Log(), Now: s.now,
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, con)
	mux.Handle("GET /ui", http.RedirectHandler(console.Prefix, http.StatusSeeOther))
	mux.Handle("/", api)
	return mux, nil
}

// consoleStats reads the overview's figures: the per-IdP counters of the stats bucket, each IdP's
// newest provisioning-log row, the outbox, and the admission-control state scim-ingest publishes.
func (s *service) consoleStats(ctx context.Context) (console.Stats, error) {
	st := console.Stats{IdPs: map[string]console.IdPStats{}, OutboxDepth: s.relay.Depth(), OutboxOldestAge: s.relay.OldestAge()}
	var err error
	if st.Admission, err = s.admissionStates(ctx); err != nil {
		st.AdmissionError = err.Error()
	}
	get := func(idp string) console.IdPStats {
		v, ok := st.IdPs[idp]
		if !ok {
			v.Users = map[string]int64{}
		}
		return v
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket([]byte(bkStats)).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return nil
			}
			n := int64(beUint64(v))
			parts := strings.Split(string(k), "\x00")
			switch {
			case parts[0] == "users" && len(parts) == 3:
				x := get(parts[1])
				x.Users[parts[2]] = n
				st.IdPs[parts[1]] = x
			case parts[0] == "seats" && len(parts) == 2:
				x := get(parts[1])
				x.Seats = n
				st.IdPs[parts[1]] = x
			case parts[0] == "locked" && len(parts) == 2:
				x := get(parts[1])
				x.Locked = n
				st.IdPs[parts[1]] = x
			}
			return nil
		})
		if err != nil {
			return err
		}
		logs := tx.Bucket([]byte(bkSCIMLog))
		return tx.Bucket([]byte(bkSCIMLogLast)).ForEach(func(idp, k []byte) error {
			var row logRow
			raw := logs.Get(k)
			if raw == nil {
				return nil // pruned by retention
			}
			if err := json.Unmarshal(raw, &row); err != nil {
				return err
			}
			x := get(string(idp))
			x.LastSCIM = &console.LastSCIM{At: row.LoggedAt, Method: row.RequestMethod, Path: row.Path, Status: row.Status, HTTPStatus: row.HTTPStatus}
			st.IdPs[string(idp)] = x
			return nil
		})
	})
	return st, err
}

// admissionStates reads every scim-ingest instance's admission-control state from the admission
// bucket (events.AdmissionState). No bucket yet (no scim-ingest has started) is no state. The bucket
// holds one entry per running instance, so a key listing and a get each stay a few round trips.
func (s *service) admissionStates(ctx context.Context) ([]events.AdmissionState, error) {
	if s.d.JS == nil {
		return nil, nil
	}
	// Its own bound, shorter than the page's: a refused or slow read shows as an error on the
	// overview instead of holding the whole page.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := s.d.JS.KeyValue(ctx, broker.KVAdmission)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", broker.KVAdmission, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", broker.KVAdmission, err)
	}
	var out []events.AdmissionState
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // the instance stopped meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", broker.KVAdmission, err)
		}
		var a events.AdmissionState
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			s.d.Log().Warn("admission state does not decode", "instance", k, "err", err)
			continue
		}
		a.Instance = k
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b events.AdmissionState) int { return strings.Compare(a.Instance, b.Instance) })
	return out, nil
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}
