package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimflow/scimflow/events"
)

// streamHealth is one stream's head and its durable consumers' positions.
type streamHealth struct {
	Name      string
	Msgs      uint64
	FirstSeq  uint64
	LastSeq   uint64
	LastTime  time.Time
	Consumers []consumerHealth
	Error     string
}

// consumerHealth is one durable consumer: where it acknowledged up to, and how far behind the
// stream's head that is. Every auth replica has its own durable names, so each shows apart.
type consumerHealth struct {
	Name       string
	AckFloor   uint64
	Delivered  uint64
	Pending    uint64
	AckPending int
	Redeliver  int
	Lag        uint64
	LastActive time.Time
}

type promFigures struct {
	P50, P99 string
	Alerts   []promAlert
	Error    string
}

type promAlert struct {
	Name, Severity, Summary, State string
	Since                          time.Time
}

type idpRow struct {
	IdP   idpView
	Stats IdPStats
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ps, err := c.idps(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var (
		wg      sync.WaitGroup
		st      Stats
		stErr   error
		streams []streamHealth
		prom    *promFigures
	)
	wg.Go(func() {
		if c.b.Stats != nil {
			st, stErr = c.b.Stats(ctx)
		}
	})
	wg.Go(func() { streams = c.pipeline(ctx) })
	if c.cfg.PrometheusURL != "" {
		wg.Go(func() { prom = c.prometheus(ctx) })
	}
	wg.Wait()
	if stErr != nil {
		c.fail(w, r, stErr)
		return
	}
	rows := make([]idpRow, 0, len(ps))
	for _, p := range ps {
		rows = append(rows, idpRow{IdP: p, Stats: st.IdPs[p.ID]})
	}
	c.render(w, r, sessionOf(r), http.StatusOK, "overview.html", "Overview", map[string]any{"IdPs": rows, "Stats": st,
		"Streams": streams, "Prom": prom, "HasJS": c.b.JS != nil, "AdmissionTTL": events.AdmissionTTL})
}

// pipeline reads every stream's state and every durable consumer's position from JetStream.
func (c *Console) pipeline(ctx context.Context) []streamHealth {
	if c.b.JS == nil {
		return nil
	}
	out := make([]streamHealth, len(c.b.Streams))
	var wg sync.WaitGroup
	for i, name := range c.b.Streams {
		wg.Go(func() {
			h := streamHealth{Name: name}
			defer func() { out[i] = h }()
			s, err := c.b.JS.Stream(ctx, name)
			if err != nil {
				h.Error = "stream info: " + err.Error()
				return
			}
			info := s.CachedInfo()
			h.Msgs, h.FirstSeq, h.LastSeq, h.LastTime = info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, info.State.LastTime
			l := s.ListConsumers(ctx)
			for ci := range l.Info() {
				if ci.Config.Durable == "" {
					continue // ordered and ephemeral consumers (the console's own look-ups) are not positions
				}
				ch := consumerHealth{Name: ci.Name, AckFloor: ci.AckFloor.Stream, Delivered: ci.Delivered.Stream, Pending: ci.NumPending,
					AckPending: ci.NumAckPending, Redeliver: ci.NumRedelivered}
				if h.LastSeq > ch.AckFloor {
					ch.Lag = h.LastSeq - ch.AckFloor
				}
				if ci.Delivered.Last != nil {
					ch.LastActive = *ci.Delivered.Last
				}
				h.Consumers = append(h.Consumers, ch)
			}
			if err := l.Err(); err != nil {
				h.Error = "consumer list: " + err.Error()
			}
			slices.SortFunc(h.Consumers, func(a, b consumerHealth) int { return strings.Compare(a.Name, b.Name) })
		})
	}
	wg.Wait()
	return out
}

// prometheus asks the configured Prometheus for revocation latency over 5 minutes and the firing
// alerts. A Prometheus that does not answer is shown as such; the page still renders.
func (c *Console) prometheus(ctx context.Context) *promFigures {
	f := &promFigures{}
	base := strings.TrimRight(c.cfg.PrometheusURL, "/")
	q := func(expr string) (string, error) {
		var out struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := c.promGet(ctx, base+"/api/v1/query?"+url.Values{"query": {expr}}.Encode(), &out); err != nil {
			return "", err
		}
		if len(out.Data.Result) == 0 || len(out.Data.Result[0].Value) < 2 {
			return "no data", nil
		}
		s, _ := out.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v != v { // NaN: no revocations in the window
			return "no data", nil
		}
		return (time.Duration(v * float64(time.Second))).Round(time.Millisecond).String(), nil
	}
	var err error
	const h = `sum by (le) (rate(scimflow_auth_revocation_latency_seconds_bucket[5m]))`
	if f.P50, err = q("histogram_quantile(0.5, " + h + ")"); err != nil {
		f.Error = err.Error()
		return f
	}
	if f.P99, err = q("histogram_quantile(0.99, " + h + ")"); err != nil {
		f.Error = err.Error()
		return f
	}
	var al struct {
		Data struct {
			Alerts []struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
				State       string            `json:"state"`
				ActiveAt    time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := c.promGet(ctx, base+"/api/v1/alerts", &al); err != nil {
		f.Error = err.Error()
		return f
	}
	for _, a := range al.Data.Alerts {
		if a.State != "firing" {
			continue
		}
		f.Alerts = append(f.Alerts, promAlert{Name: a.Labels["alertname"], Severity: a.Labels["severity"], Summary: a.Annotations["summary"],
			State: a.State, Since: a.ActiveAt})
	}
	return f
}

func (c *Console) promGet(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	res, err := c.b.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("prometheus: %s", res.Status)
	}
	return json.NewDecoder(io.LimitReader(res.Body, 4<<20)).Decode(out)
}

// causedEvent is an event the console found on a stream for a correlation id.
type causedEvent struct {
	Stream  string
	Seq     uint64
	Subject string
	Type    string
	Stored  time.Time
	Took    time.Duration // from the causing SCIM event's storage to this one's
	Reason  string
}

// findCaused reads the messages on subject filter from stream, stored from start on (at most max,
// for at most the context's time), whose correlation id is corr. It uses an ordered consumer, which
// leaves no durable state behind.
func (c *Console) findCaused(ctx context.Context, stream, filter string, start time.Time, corr string, max int) ([]causedEvent, error) {
	if c.b.JS == nil {
		return nil, nil
	}
	cons, err := c.b.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start})
	if err != nil {
		return nil, err
	}
	var out []causedEvent
	for read := 0; read < max; {
		batch, err := cons.FetchNoWait(min(100, max-read))
		if err != nil {
			return out, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			// One message holds one event or the batch of one transaction (internal/outbox).
			evs, err := events.DecodeMessage(m.Subject(), m.Data())
			if err != nil {
				continue
			}
			for _, e := range evs {
				if e.CorrelationID != corr {
					continue
				}
				ce := causedEvent{Stream: stream, Seq: md.Sequence.Stream, Subject: e.Subject, Type: e.Type, Stored: md.Timestamp}
				if r, ok := e.Data.(events.SessionsRevoked); ok {
					ce.Reason = r.Reason
				}
				out = append(out, ce)
			}
		}
		if n == 0 {
			break
		}
		read += n
	}
	return out, nil
}
