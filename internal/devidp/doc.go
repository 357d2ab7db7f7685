// Package devidp is scimflow's own small OpenID provider: a real OpenID Connect authorization
// server (discovery, authorize with PKCE, token with client authentication, userinfo, JWKS) that
// signs genuine ID tokens with every algorithm scimflow accepts. `scimflow demo` and `scimflow bench`
// log people in through it, and the test kit testkit/oidctest builds on it.
//
// It is honest: it never issues a bad token. Forged tokens (docs/design.md §9.4) live only in the
// test kit, which installs its own Minter through SetMinter; the shipped binary contains none of that.
//
// The provider has no UI. /authorize logs in the provider's default user, or the registered user
// named by the login_hint parameter, and redirects straight back with a code. Everything a caller
// steers is a method: users (AddUser, DenyUser), signing (SetAlg, RotateKeys) and the ways real
// providers misbehave at the flow level (SetFlow).
package devidp
