package events

import "strings"

// Read-your-writes barrier (docs/auth.md, "Ordering"). A login must reflect every SCIM write of its
// IdP acknowledged before the login's callback began, but auth sees neither scim-ingest's outbox nor
// identity-store's. So the callback asks, over NATS request-reply:
//
//  1. scim-ingest, on BarrierSCIMSubject(idp): once its outbox has published every record of that
//     IdP committed before the request arrived, it answers a SCIM stream sequence covering them;
//  2. identity-store, on BarrierIdentitySubject(idp) with that sequence: once its SCIM consumer has
//     applied it and its outbox has published the IDENTITY events of that IdP derived so far, it
//     answers an IDENTITY stream sequence covering them;
//
// and waits for its own IDENTITY projection to reach that sequence. Subjects carry the IdP, so a
// deployment's NATS permissions can name them, and one IdP's answer never waits on another IdP's
// records beyond the shared order of the outbox.
const (
	barrierSCIMPrefix     = "scimflow.barrier.scim."
	barrierIdentityPrefix = "scimflow.barrier.identity."
	// BarrierSCIMSubjects and BarrierIdentitySubjects are what scim-ingest and identity-store
	// subscribe to; auth publishes requests on them.
	BarrierSCIMSubjects     = barrierSCIMPrefix + "*"
	BarrierIdentitySubjects = barrierIdentityPrefix + "*"
)

// BarrierSCIMSubject is the subject auth asks scim-ingest on for idp.
func BarrierSCIMSubject(idp string) string { return barrierSCIMPrefix + idp }

// BarrierIdentitySubject is the subject auth asks identity-store on for idp.
func BarrierIdentitySubject(idp string) string { return barrierIdentityPrefix + idp }

// BarrierIdP returns the IdP of a barrier subject, "" if subject is not one.
func BarrierIdP(subject string) string {
	for _, p := range []string{barrierSCIMPrefix, barrierIdentityPrefix} {
		if idp, ok := strings.CutPrefix(subject, p); ok && ValidToken(idp) {
			return idp
		}
	}
	return ""
}

// BarrierRequest is the body of a request to identity-store (scim-ingest's requests have none).
type BarrierRequest struct {
	SCIMSeq uint64 `json:"scim_seq"`
}

// BarrierReply is the answer of either service: the stream sequence to wait for, or why there is
// none (the login then fails closed).
type BarrierReply struct {
	Seq   uint64 `json:"seq"`
	Error string `json:"error,omitempty"`
}

// SubjectIdP returns the IdP token of an event subject ("scim.{idp}.…", "identity.{idp}.…",
// "scimlog.{idp}", with or without the priority prefix), "" if it has none.
func SubjectIdP(subject string) string {
	subject = strings.TrimPrefix(subject, PriorityPrefix)
	parts := strings.SplitN(subject, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}
