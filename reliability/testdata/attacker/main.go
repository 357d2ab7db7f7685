// Command attacker is the forged-session attack of docs/security.md (finding 1) run from
// inside a compose network: reliability/compose_test.go builds it as a static binary into a FROM
// scratch image and runs it as a container on the network it attacks. It only reports what it
// managed to do, one JSON object per attempt on stdout; the test decides what must have failed.
//
// Attempts: an anonymous NATS connection; each role's credentials given in ROLES reading the
// auth_keys bucket (the ES256 signing keys) and sniffing auth's subjects; the unauthenticated
// NATS monitoring port; in the cluster variant, joining a node's route port. Environment: NATS_URL,
// MONITOR_URL, ROLES (role=password,…), ROUTE_ADDR (host:6222, optional).
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// attempt is one line of the report.
type attempt struct {
	Attack string `json:"attack"`          // anonymous-connect, read-auth-keys, sniff, monitor
	Role   string `json:"role,omitempty"`  // the credentials used, if any
	OK     bool   `json:"ok"`              // the attack got what it wanted
	Value  string `json:"value,omitempty"` // what it read (base64), for the test to try signing with
	Error  string `json:"error,omitempty"` // why it did not
}

func main() {
	out := json.NewEncoder(os.Stdout)
	natsURL := os.Getenv("NATS_URL")
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})

	// An anonymous client: nats.conf has no anonymous user, so the server must refuse it.
	nc, err := nats.Connect(natsURL, nats.Timeout(5*time.Second), quiet, nats.NoReconnect())
	a := attempt{Attack: "anonymous-connect", OK: err == nil}
	if err != nil {
		a.Error = err.Error()
	}
	out.Encode(a)
	if err == nil { // let in: try what the roles below try
		out.Encode(readKeys(nc, "anonymous"))
		out.Encode(sniff(nc, "anonymous"))
		nc.Close()
	}

	for _, kv := range strings.Split(os.Getenv("ROLES"), ",") {
		role, pw, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		nc, err := nats.Connect(natsURL, nats.UserInfo(role, pw), nats.CustomInboxPrefix("_INBOX."+role),
			nats.Timeout(5*time.Second), quiet, nats.NoReconnect())
		if err != nil {
			out.Encode(attempt{Attack: "read-auth-keys", Role: role, Error: "connect: " + err.Error()})
			continue
		}
		out.Encode(readKeys(nc, role))
		out.Encode(sniff(nc, role))
		nc.Close()
	}

	// The cluster variant's route port: join as a route (the protocol's CONNECT) without
	// credentials, with a guessed route password, and with each role's client password.
	if addr := os.Getenv("ROUTE_ADDR"); addr != "" {
		tries := []struct{ label, user, pass string }{{"none", "", ""}, {"guessed", "route", "route"}}
		for _, kv := range strings.Split(os.Getenv("ROLES"), ",") {
			if role, pw, ok := strings.Cut(kv, "="); ok {
				tries = append(tries, struct{ label, user, pass string }{role, role, pw})
			}
		}
		for _, c := range tries {
			out.Encode(joinRoute(addr, c.label, c.user, c.pass))
		}
	}

	// The monitoring port has no authentication in nats-server; nats.conf binds it to the
	// container's loopback, so another container must not reach it.
	if u := os.Getenv("MONITOR_URL"); u != "" {
		c := &http.Client{Timeout: 5 * time.Second}
		a := attempt{Attack: "monitor"}
		resp, err := c.Get(u)
		if err != nil {
			a.Error = err.Error()
		} else {
			a.OK = resp.StatusCode == http.StatusOK
			a.Error = resp.Status
			resp.Body.Close()
		}
		out.Encode(a)
	}
}

// readKeys reads auth's signing key set from the auth_keys bucket as role, first through the
// JetStream KV API, then by a direct get on the bucket's stream.
func readKeys(nc *nats.Conn, role string) attempt {
	a := attempt{Attack: "read-auth-keys", Role: role}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	var errs []error
	if kv, err := js.KeyValue(ctx, "auth_keys"); err != nil {
		errs = append(errs, err)
	} else if e, err := kv.Get(ctx, "keyset"); err != nil {
		errs = append(errs, err)
	} else {
		a.OK, a.Value = true, base64.StdEncoding.EncodeToString(e.Value())
		return a
	}
	// The raw direct-get request, in case the KV layer's stream lookup is what was refused.
	msg, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_auth_keys.$KV.auth_keys.keyset", nil)
	if err == nil && msg.Header.Get("Status") == "" && len(msg.Data) > 0 {
		a.OK, a.Value = true, base64.StdEncoding.EncodeToString(msg.Data)
		return a
	}
	if err == nil {
		err = errors.New("direct get: status " + msg.Header.Get("Status") + " " + msg.Header.Get("Description"))
	}
	errs = append(errs, err)
	if le := nc.LastError(); le != nil {
		errs = append(errs, le)
	}
	a.Error = errors.Join(errs...).Error()
	return a
}

// sniff subscribes to the bucket's and auth's subjects as role: a role other than auth must get
// a permissions violation for it.
func sniff(nc *nats.Conn, role string) attempt {
	a := attempt{Attack: "sniff", Role: role}
	var errs []error
	for _, subj := range []string{"$KV.auth_keys.>", "auth.>", ">"} {
		sub, err := nc.SubscribeSync(subj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The server answers a refused SUB with -ERR before the PONG of this flush.
		if err := nc.Flush(); err != nil {
			errs = append(errs, err)
		}
		if le := nc.LastError(); le != nil && strings.Contains(le.Error(), `to "`+subj+`"`) {
			errs = append(errs, le)
		} else {
			a.OK = true // subscribed to at least one subject it must not see
		}
		sub.Unsubscribe()
	}
	if len(errs) > 0 {
		a.Error = errors.Join(errs...).Error()
	}
	return a
}

// joinRoute speaks the route protocol to a node's cluster port as another node would: it reads the
// node's INFO, sends a route CONNECT with the given credentials and a PING, and reports OK when the
// node answers PONG (it took the connection as a route) rather than -ERR or closing it.
func joinRoute(addr, label, user, pass string) attempt {
	a := attempt{Attack: "route-join", Role: label}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		a.Error = fmt.Sprintf("no INFO: %q %v", info, err)
		return a
	}
	connect, _ := json.Marshal(map[string]any{"verbose": false, "pedantic": false, "user": user, "pass": pass,
		"name": "intruder", "cluster": "scimflow", "headers": true})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		a.Error = err.Error()
		return a
	}
	for {
		line, err := r.ReadString('\n')
		switch {
		case strings.HasPrefix(line, "PONG"):
			a.OK = true
			return a
		case strings.HasPrefix(line, "-ERR"):
			a.Error = strings.TrimSpace(line)
			return a
		case err != nil:
			a.Error = err.Error()
			return a
		}
	}
}
