// Package prometheus holds the tests of scimflow's operations artefacts under deploy/: the NATS and
// compose configuration, the Prometheus rules (through promtool) and, against a real Prometheus
// scraping a real `scimflow serve`, every alert rule and every Grafana dashboard panel. The package
// has no non-test code; this file only documents it.
package prometheus
