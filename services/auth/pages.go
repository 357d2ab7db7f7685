package auth

import (
	"html/template"
	"net/http"
	"strings"
)

// Browser pages. Every one is a self-contained document under a CSP that allows no script, style
// or frame, so a reason or a redirect target shown on it cannot run anything.

// loginReasons explains a refused login in words a person can act on; reasons without an entry are
// shown as their code. JSON callers get the code alone (error_description).
var loginReasons = map[string]string{
	"invalid_email": "The identity provider sent an email address that cannot identify anyone: it contains " +
		"control, formatting or invisible characters. Ask your administrator to correct the address at the identity provider.",
	"no_email":         "The identity provider did not send an email address for your account.",
	"email_unverified": "The identity provider says your email address is not verified.",
	"locked":           "Your account is locked (deprovisioned or disabled). Ask your administrator.",
	"sub_mismatch": "This account at the identity provider is not the one that first signed in as this person " +
		"(its subject identifier differs). If the account was replaced on purpose, an administrator must reset " +
		"the binding (DELETE /api/v1/users/{id}/sub) before it can sign in.",
	"identity_catching_up": "Sign-in is briefly unavailable while the latest account changes are applied. Try again in a moment.",
	"fail_closed":          "Sign-in is unavailable because the current account state cannot be confirmed. Try again in a moment.",
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><title>Sign-in refused</title></head>
<body><h1>Sign-in refused</h1>
<p>{{.Text}}</p>
<p>Reason code: <code>{{.Code}}</code></p>
</body></html>
`))

var logoutPage = template.Must(template.New("logout").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><title>Sign out</title></head>
<body><h1>Sign out?</h1>
<p>Another site asked to sign you out. Sign out only if you meant to.</p>
<form method="post" action="{{.Action}}">{{if .Redirect}}<input type="hidden" name="redirect_url" value="{{.Redirect}}">{{end}}<button type="submit">Sign out</button></form>
</body></html>
`))

// wantsHTML reports a browser navigation (Accept names text/html).
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func writePage(w http.ResponseWriter, status int, t *template.Template, data any) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = t.Execute(w, data)
}
