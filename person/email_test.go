package person

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"LENA@x.com":        "lena@x.com",
		" lena@x.com\t":     "lena@x.com",
		"lena@x.com\u00a0":  "lena@x.com",
		"\u3000Lena@X.Com ": "lena@x.com",
	} {
		if got := NormalizeEmail(in); got != want {
			t.Errorf("NormalizeEmail(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckEmail(t *testing.T) {
	t.Parallel()
	good := []string{"alice@x.com", " Alice@X.com ", "a.b+c@sub.example.org", "jörg@bücher.example"}
	for _, s := range good {
		if err := CheckEmail(s); err != nil {
			t.Errorf("CheckEmail(%q) = %v, want nil", s, err)
		}
	}
	bad := []string{
		"", "   ", "alice", "@x.com", "alice@", "a@b@c",
		"alice@x.com\x00", "alice\r\n@x.com", "ali\u200bce@x.com", "alice@x.com\u200d",
		"\u202ealice@x.com", "alice@x.com\ufeff", "ali ce@x.com", "alice@x\u2060.com",
		"al\xffice@x.com", strings.Repeat("a", 320) + "@x.com",
	}
	for _, s := range bad {
		err := CheckEmail(s)
		if err == nil {
			t.Errorf("CheckEmail(%q) = nil, want an error", s)
		} else if !errors.Is(err, ErrInvalidEmail) {
			t.Errorf("CheckEmail(%q) = %v, want it to wrap ErrInvalidEmail", s, err)
		}
	}
}
