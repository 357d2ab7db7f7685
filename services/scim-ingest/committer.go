package scimingest

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

// committer groups concurrent writes into shared bbolt transactions: one fsync for every request
// that arrived while the previous commit was on disk. Unlike db.Batch it adds no delay when a single
// client writes (the first request commits at once), which keeps single-request latency at one fsync.
//
// A write function may run more than once (when another function of its batch fails, the batch is
// retried without it, and it then runs alone), so functions must not have side effects outside the
// transaction other than assigning their results; ids and the clock are read before they are queued.
type committer struct {
	db       *bolt.DB
	reqs     chan *commitReq
	maxBatch int
	after    func(n int) // called after each successful commit with the number of writes in it
}

type commitReq struct {
	fn    func(tx *bolt.Tx) error
	done  chan error      // Update waits on it; nil for Submit
	onErr func(err error) // Submit's error report
}

func (r *commitReq) finish(err error) {
	if r.done != nil {
		r.done <- err
	} else if err != nil && r.onErr != nil {
		r.onErr(err)
	}
}

func newCommitter(db *bolt.DB, maxBatch int, after func(int)) *committer {
	return &committer{db: db, reqs: make(chan *commitReq, 4*maxBatch), maxBatch: maxBatch, after: after}
}

// Update runs fn in a write transaction shared with concurrent writers and returns fn's error or the
// commit's error. It returns only after the transaction is durable (or rolled back).
func (c *committer) Update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	req := &commitReq{fn: fn, done: make(chan error, 1)}
	select {
	case c.reqs <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the write is waited for even if the request is cancelled: the client may be gone,
	// but the outcome decides whether events were committed and must not be left undetermined.
	return <-req.done
}

// Submit queues fn without waiting for its commit; onErr reports a failure. It blocks only while the
// queue is full, which bounds the writes in flight. Records that must be durable before the response
// (resource changes) use Update; Submit is for the provisioning-log records of requests that changed
// nothing, so a read never waits for an fsync.
func (c *committer) Submit(fn func(tx *bolt.Tx) error, onErr func(error)) {
	c.reqs <- &commitReq{fn: fn, onErr: onErr}
}

// Run commits queued writes until ctx ends, then drains what is already queued.
func (c *committer) Run(ctx context.Context) {
	batch := make([]*commitReq, 0, c.maxBatch)
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case r := <-c.reqs:
					c.commit([]*commitReq{r})
				default:
					return
				}
			}
		case r := <-c.reqs:
			batch = append(batch[:0], r)
		fill:
			for len(batch) < c.maxBatch {
				select {
				case r := <-c.reqs:
					batch = append(batch, r)
				default:
					break fill
				}
			}
			c.commit(batch)
		}
	}
}

// commit runs batch in one transaction. If a function fails, the transaction is rolled back, the
// others are committed together without it, and then it runs alone (on the state they left) so that
// it reports its own outcome; requests keep their arrival order.
func (c *committer) commit(batch []*commitReq) {
	var solo []*commitReq
	defer func() {
		for _, r := range solo {
			c.commit([]*commitReq{r})
		}
	}()
	for len(batch) > 0 {
		failed := -1
		var fnErr error
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, r := range batch {
				if err := r.fn(tx); err != nil {
					failed, fnErr = i, err
					return err
				}
			}
			return nil
		})
		switch {
		case err == nil:
			if c.after != nil {
				c.after(len(batch))
			}
			for _, r := range batch {
				r.finish(nil)
			}
			return
		case failed < 0: // the commit itself failed
			for _, r := range batch {
				r.finish(err)
			}
			return
		case len(batch) == 1:
			batch[0].finish(fnErr)
			return
		default:
			solo = append(solo, batch[failed])
			batch = append(append([]*commitReq(nil), batch[:failed]...), batch[failed+1:]...)
		}
	}
}
