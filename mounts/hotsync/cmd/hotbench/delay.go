package main

import (
	"context"
	"net"
	"sync"
	"time"
)

// delayProxy forwards TCP connections to upstream, holding every chunk of
// bytes back for half the round-trip time in each direction, so requests
// see the latency of a real S3 region (10-30 ms from EC2) without a
// bandwidth limit. On localhost, with no latency, parallelism cannot show:
// the benchmark's -rtt flag puts this in front of the server.
type delayProxy struct {
	ln       net.Listener
	upstream string
	half     time.Duration
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool // open client connections, closed by close
}

func startDelayProxy(upstream string, rtt time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, upstream: upstream, half: rtt / 2, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *delayProxy) addr() string { return p.ln.Addr().String() }

// close stops accepting, drops open connections (clients keep idle ones
// for minutes) and waits for every forwarding goroutine.
func (p *delayProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// track registers c while the proxy is open; false means it is closing.
func (p *delayProxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c, true) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.track(c, false)
			defer c.Close()
			u, err := net.Dial("tcp", p.upstream)
			if err != nil {
				return
			}
			defer u.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{}, 2)
			go func() { p.pipe(ctx, u, c); done <- struct{}{} }()
			go func() { p.pipe(ctx, c, u); done <- struct{}{} }()
			<-done
			// One direction ended: close both so the other ends too.
			c.Close()
			u.Close()
			<-done
		}()
	}
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk delayed by p.half after it was read.
func (p *delayProxy) pipe(ctx context.Context, dst, src net.Conn) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{time.Now().Add(p.half), buf[:n]}:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	// Half-close so the other side sees EOF.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
