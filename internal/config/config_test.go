package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type section struct {
	Listen  string   `json:"listen"`
	TTL     Duration `json:"ttl"`
	Origins []string `json:"origins"`
	On      bool     `json:"on"`
	N       int      `json:"count"`
	Secret  string   `json:"-"`
}

type file struct {
	DataDir string  `json:"data_dir"`
	Token   string  `json:"admin_token"`
	Auth    section `json:"auth"`
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadExpandsAndOverrides(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("data_dir: /d\nadmin_token: ${TOKEN}\nauth:\n  listen: \":1\"\n  ttl: 2h\n  origins: [a]\n  count: ${N:-7}\n"), 0o600)
	var got file
	err := Load(path, &got, env(map[string]string{"TOKEN": "s3cr$t", "SCIMFLOW_AUTH_LISTEN": ":9", "SCIMFLOW_AUTH_ORIGINS": "x, y", "SCIMFLOW_AUTH_ON": "true"}))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := file{DataDir: "/d", Token: "s3cr$t", Auth: section{Listen: ":9", TTL: Duration(2 * time.Hour), Origins: []string{"x", "y"}, On: true, N: 7}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		yaml string
		env  map[string]string
		want []string
	}{
		"unknown key":        {yaml: "data_dri: x\n", want: []string{"data_dri"}},
		"bad duration":       {yaml: "auth:\n  ttl: soon\n", want: []string{"soon"}},
		"every env problem":  {yaml: "", env: map[string]string{"SCIMFLOW_AUTH_ON": "maybe", "SCIMFLOW_AUTH_COUNT": "x", "SCIMFLOW_AUTH_TTL": "1parsec"}, want: []string{"SCIMFLOW_AUTH_ON", "SCIMFLOW_AUTH_COUNT", "SCIMFLOW_AUTH_TTL"}},
		"hidden field stays": {yaml: "auth:\n  secret: x\n", want: []string{"secret"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(c.yaml), 0o600)
			var f file
			err := Load(path, &f, env(c.env))
			if err == nil {
				t.Fatalf("Load(%q) = nil, want error", c.yaml)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestExpandLeavesBareDollar(t *testing.T) {
	t.Parallel()
	got := Expand("a$b ${X} ${Y:-d} ${Z}", env(map[string]string{"X": "1"}))
	if got != "a$b 1 d " {
		t.Errorf("Expand = %q, want %q", got, "a$b 1 d ")
	}
}

// TestLoadReportsEveryUnknownKey: a config with several typos gets one error per typo, each with
// its file:line and the key it most resembles, instead of only the first.
func TestLoadReportsEveryUnknownKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("data_dir: /d\ndata_dri: x\nauth:\n  listen: \":1\"\n  ttll: 2h\n  origin: [a]\n  zzzzzzzz: 1\nnats:\n  url: x\n"), 0o600)
	var got file
	err := Load(path, &got, env(nil))
	if err == nil {
		t.Fatal("Load = nil, want the unknown keys")
	}
	want := []string{
		path + ":2: unknown key data_dri (did you mean data_dir?)",
		path + ":5: unknown key auth.ttll (did you mean ttl?)",
		path + ":6: unknown key auth.origin (did you mean origins?)",
		path + ":7: unknown key auth.zzzzzzzz",
		path + ":8: unknown key nats",
	}
	if diff := cmp.Diff(want, strings.Split(err.Error(), "\n")); diff != "" {
		t.Errorf("Load error lines (-want +got):\n%s", diff)
	}
}

// TestUnknownEnv: an unknown key under a known section is an error naming the closest key; names
// outside the sections (test knobs, compose variables) and known keys pass.
func TestUnknownEnv(t *testing.T) {
	t.Parallel()
	err := UnknownEnv(&file{}, "SCIMFLOW", []string{
		"SCIMFLOW_AUTH_LISTEN=:1", "SCIMFLOW_DATA_DIR=/d", "SCIMFLOW_RELIABILITY_LONG=1", "SCIMFLOW_PORT_AUTH=8082",
		"SCIMFLOW_AUTH_ORIGIN=x", "SCIMFLOW_AUTH_QQQQQQQQ=y", "PATH=/bin", "SCIMFLOW_AUTH_SECRET=z",
	})
	want := []string{
		"SCIMFLOW_AUTH_ORIGIN: auth has no key ORIGIN (did you mean SCIMFLOW_AUTH_ORIGINS?)",
		"SCIMFLOW_AUTH_QQQQQQQQ: auth has no key QQQQQQQQ",
		"SCIMFLOW_AUTH_SECRET: auth has no key SECRET",
	}
	var got []string
	if err != nil {
		got = strings.Split(err.Error(), "\n")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UnknownEnv (-want +got):\n%s", diff)
	}
}
