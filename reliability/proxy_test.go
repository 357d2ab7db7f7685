package reliability

import (
	"io"
	"net"
	"sync"
	"testing"
)

// tcpProxy forwards loopback TCP connections to a target. It can cut every connection and refuse
// new ones (a partition), and it can intercept the first bytes a target sends on a connection (the
// start of an HTTP response) to run a hook — a SIGKILL — and drop them instead of forwarding.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex // guards the following
	blocked bool
	conns   map[net.Conn]struct{}
	// onResponse, when set, is called once with the first chunk the target sends on some
	// connection; that chunk is dropped and the client's connection closed.
	onResponse func(first []byte)
	closed     bool
}

// newProxy listens on a free loopback port and forwards to target until the test ends.
func newProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut()
}

// block cuts every connection and refuses new ones until unblock.
func (p *tcpProxy) block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
	p.cut()
}

// unblock lets connections through again.
func (p *tcpProxy) unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// armResponse sets the hook run on the next response chunk (see onResponse).
func (p *tcpProxy) armResponse(f func(first []byte)) {
	p.mu.Lock()
	p.onResponse = f
	p.mu.Unlock()
}

func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked || p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *tcpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *tcpProxy) serve(client net.Conn) {
	p.mu.Lock()
	blocked := p.blocked
	p.mu.Unlock()
	if blocked {
		client.Close()
		return
	}
	upstream, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, upstream) {
		client.Close()
		upstream.Close()
		return
	}
	defer func() {
		p.untrack(client, upstream)
		client.Close()
		upstream.Close()
	}()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(upstream, client)
		done <- struct{}{}
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := upstream.Read(buf)
			if n > 0 {
				p.mu.Lock()
				hook := p.onResponse
				p.onResponse = nil
				p.mu.Unlock()
				if hook != nil {
					hook(buf[:n])
					break
				}
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
}
