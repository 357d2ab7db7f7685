// Package person holds the rules about who a person is that every service applies the same way:
// how an email address is normalised into the key that links SCIM resources, logins and registry
// entries, and which email addresses are refused outright. It is pure domain logic: it imports nothing
// of the module, so events/, the services and the platform may all depend on it.
package person

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// MaxEmailLen is the longest email address accepted (RFC 5321's path limit of 256 minus the brackets
// is 254; 320 is the local-part plus domain maximum many systems allow, kept for compatibility).
const MaxEmailLen = 320

// NormalizeEmail returns the key under which an email address identifies a person within one IdP:
// surrounding Unicode white space (tab, no-break space, …) removed and lower-cased. Every service links
// people through this function and no other, so a SCIM userName with a trailing no-break space and a
// login with the plain address name the same person. Registry ids derived from it (events.UserID) are
// stable: the function must never change for addresses that pass CheckEmail.
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// ErrInvalidEmail is wrapped by every error CheckEmail returns.
var ErrInvalidEmail = errors.New("invalid email address")

// CheckEmail refuses an email address that cannot safely identify a person: empty, too long, not
// exactly one '@' with text on both sides, or holding a control character (NUL, CR, LF, …), a format
// character (zero-width joiners, bidi overrides, the BOM) or a zero-width space. Such characters make
// two addresses look alike to a person while differing to a program, or break out of HTTP headers
// (X-Scimflow-Email) and log lines. The address is checked as normalised (NormalizeEmail), so
// surrounding white space alone is not an error; white space inside the address is.
func CheckEmail(s string) error {
	n := NormalizeEmail(s)
	switch {
	case n == "":
		return fmt.Errorf("%w: empty", ErrInvalidEmail)
	case len(n) > MaxEmailLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidEmail, MaxEmailLen)
	}
	for i, r := range n {
		switch {
		case r == unicode.ReplacementChar:
			return fmt.Errorf("%w: invalid UTF-8 or U+FFFD at byte %d", ErrInvalidEmail, i)
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r), isZeroWidth(r):
			return fmt.Errorf("%w: control or invisible character U+%04X at byte %d", ErrInvalidEmail, r, i)
		case unicode.IsSpace(r):
			return fmt.Errorf("%w: white space U+%04X at byte %d", ErrInvalidEmail, r, i)
		}
	}
	at := strings.IndexByte(n, '@')
	if at <= 0 || at == len(n)-1 || strings.Count(n, "@") != 1 {
		return fmt.Errorf("%w: want exactly one '@' with a local part and a domain", ErrInvalidEmail)
	}
	return nil
}

// isZeroWidth reports the invisible characters that are not in category Cf but render as nothing.
func isZeroWidth(r rune) bool {
	switch r {
	case '\u200B', '\u2060', '\u180E', '\u3164', '\uFFA0', '\u115F', '\u1160':
		return true
	}
	return false
}
