// Package oidctest is scimflow's test OpenID provider: a small, real OpenID Connect
// authorization server that signs ID tokens with every algorithm scimflow accepts and can
// forge every bad token and flow docs/design.md §9.4 lists (cases O1–O24).
//
// It exists so auth's tests, the end-to-end suite and `scimflow demo` exercise the relying
// party against real HTTP, real JWKS and real signatures instead of hand-built fakes
// (docs/design.md §7). The same Provider serves in-process through Handler (for httptest) and on a
// loopback listener through Start (for a `scimflow serve` subprocess).
//
// The provider has no UI. /authorize logs in the provider's default user, or the registered
// user named by the login_hint parameter, and redirects straight back with a code. Everything
// a test needs to steer is a method: users (AddUser, DenyUser), signing (SetAlg, RotateKeys),
// forged ID tokens (Forge, SignIDToken) and flow-level faults (SetFlow).
//
// Forgeries and what go-oidc does with them: go-oidc's IDTokenVerifier rejects most forged
// tokens by itself, but it leaves nonce, iat, azp, sub, at_hash, email_verified and token
// size to the relying party (docs/design.md §8.1). Each Forgery's doc comment names the case of docs/design.md §9.4
// it serves and says which side must reject it.
package oidctest
