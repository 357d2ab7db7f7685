// Package reliability is scimflow's fault-injection suite (docs/design.md §9.1 and §9.5). Its
// tests run scim-ingest, identity-store and auth as separate `scimflow` processes against
// separately started nats-server processes, drive SCIM writes (and logins) from a workload
// generator that records every acknowledged write, inject faults — SIGKILL of a service, NATS
// stopped, a 3-node R3 cluster losing its leader and a partitioned node, a truncated stream, a
// poison event, a second process on a data dir, a full disk, a partition between auth and NATS —
// and then check the oracles: every acknowledged write is in the SCIM stream and the registry,
// nothing unexpected is there, nothing was applied twice, and identity-store's file equals a
// clean replay of the streams.
//
// `go test ./reliability/` runs the short version; SCIMFLOW_RELIABILITY_LONG=1 (make reliability)
// runs many more iterations and longer outages. docs/reliability.md records what the runs showed.
package reliability
