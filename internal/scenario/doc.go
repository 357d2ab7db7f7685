// Package scenario is the client side of scimflow's public interfaces, shared by the end-to-end
// suite (e2e/), `scimflow demo` and `scimflow bench`: an admin API client, a SCIM client that sends
// what Okta and what Microsoft Entra ID send (docs/scim.md and docs/idp/), a browser that
// logs in through auth's /login → OpenID provider → /callback with a cookie jar, and /verify and
// /get-identity calls as reverse proxies and applications make them.
//
// It talks HTTP only: nothing here reaches into a service's state, so what the suite proves is what
// an operator, an IdP and a browser observe.
package scenario
