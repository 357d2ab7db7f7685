package identitystore

import (
	"encoding/binary"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// Metric descriptors read from the registry's counters at scrape time. They come from the bbolt file,
// not from in-memory counters, so they survive restarts and equal what a replay computes.
var (
	descUsers = prometheus.NewDesc(metricsPrefix+"_users", "Registry users by IdP and status (provisioned, active, inactive).",
		[]string{"idp_id", "status"}, nil)
	descSeats = prometheus.NewDesc(metricsPrefix+"_seats", "Users holding a seat, by IdP.",
		[]string{"idp_id"}, nil)
	descRevocations = prometheus.NewDesc(metricsPrefix+"_revocations_total", "Session revocations by IdP and reason (deprovisioned, groups_changed, admin, seat_removed).",
		[]string{"idp_id", "reason"}, nil)
	descInactive = prometheus.NewDesc(metricsPrefix+"_inactive_transitions_total", "Users who became inactive through SCIM, by IdP: a sudden rise is the mass-deprovisioning signal.",
		[]string{"idp_id"}, nil)
)

// statsCollector exports the stats bucket.
type statsCollector struct{ db *bolt.DB }

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUsers
	ch <- descSeats
	ch <- descRevocations
	ch <- descInactive
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bkStats))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return nil
			}
			n := float64(int64(binary.BigEndian.Uint64(v)))
			parts := strings.Split(string(k), "\x00")
			switch {
			case parts[0] == "users" && len(parts) == 3:
				ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, n, parts[1], parts[2])
			case parts[0] == "seats" && len(parts) == 2:
				ch <- prometheus.MustNewConstMetric(descSeats, prometheus.GaugeValue, n, parts[1])
			case parts[0] == "revocations" && len(parts) == 3:
				ch <- prometheus.MustNewConstMetric(descRevocations, prometheus.CounterValue, n, parts[1], parts[2])
			case parts[0] == "inactive_transitions" && len(parts) == 2:
				ch <- prometheus.MustNewConstMetric(descInactive, prometheus.CounterValue, n, parts[1])
			}
			return nil
		})
	})
}
