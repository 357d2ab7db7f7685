// Package oidctest is scimflow's test OpenID provider: the honest provider of internal/devidp
// (which `scimflow demo` and `scimflow bench` use) plus the machinery to forge every bad token and
// flow docs/design.md §9.4 lists (cases O1–O24). It lives in the test kit so that the shipped binary
// holds no forger.
//
// It exists so auth's tests and the end-to-end suite exercise the relying party against real HTTP,
// real JWKS and real signatures instead of hand-built fakes (docs/design.md §7). The same Provider
// serves in-process through Handler (for httptest) and on a loopback listener through Start (for a
// `scimflow serve` subprocess). Everything devidp.Provider offers is promoted (AddUser, SetAlg,
// RotateKeys, SetFlow, …); this package adds forged ID tokens (Forge, SignIDToken), the mix-up peer
// and the attacker-controlled key URLs.
//
// Forgeries and what go-oidc does with them: go-oidc's IDTokenVerifier rejects most forged
// tokens by itself, but it leaves nonce, iat, azp, sub, at_hash, email_verified and token
// size to the relying party (docs/design.md §8.1). Each Forgery's doc comment names the case of docs/design.md §9.4
// it serves and says which side must reject it.
package oidctest
