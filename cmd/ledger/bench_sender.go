package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
)

// sendTimeout bounds one delivery, from writing its request to reading the
// whole answer.
const sendTimeout = 30 * time.Second

// deliverer sends deliveries signed like Svix to one webhook URL: the
// benchmarks' load generator. To a plain-HTTP URL (the benchmarks' own
// services) it writes each request by hand on a kept-alive HTTP/1.1
// connection it holds while the request is in flight, and reads the answer
// with http.ReadResponse: net/http's client hands every request to two
// goroutines of its connection and back over channels, which cost the
// senders ~100-125 µs of CPU a delivery against the ledger (senders and
// service share the machine's two cores) where this costs about half. Other
// URLs (https) go through net/http's client. Safe for concurrent use; every
// call to post gets a connection of its own.
type deliverer struct {
	signer *clerkgen.Signer
	target string
	// Set for a plain-HTTP target: where to dial, and the request line's
	// and Host header's values.
	addr, host, path string
	client           *http.Client // any other target

	mu   sync.Mutex
	idle []*loadConn
}

// loadConn is one kept-alive connection of a deliverer.
type loadConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte // the request being written, reused
}

// newDeliverer returns a deliverer to target signing with signer, keeping at
// most conns connections idle. Errors: a target that is not an absolute
// http(s) URL.
func newDeliverer(target string, signer *clerkgen.Signer, conns int) (*deliverer, error) {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("webhook URL %q: want http://host[:port]/path or https://…", target)
	}
	d := &deliverer{signer: signer, target: target}
	if u.Scheme == "https" {
		d.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}, Timeout: sendTimeout}
		return d, nil
	}
	d.host, d.path, d.addr = u.Host, u.RequestURI(), u.Host
	if u.Port() == "" {
		d.addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return d, nil
}

// post sends one delivery with that svix-id and body, signed now, and
// returns the answer's status code; err is a transport error (the
// connection is then dropped, and the next post dials a new one).
func (d *deliverer) post(ctx context.Context, id string, body []byte) (int, error) {
	at := time.Now()
	h := d.signer.Headers(id, at, body)
	if d.client != nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.target, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header = h
		res, err := d.client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	c, err := d.conn(ctx)
	if err != nil {
		return 0, err
	}
	status, keep, err := c.roundTrip(d, h, body)
	if err != nil || !keep {
		c.c.Close()
		return status, err
	}
	d.mu.Lock()
	d.idle = append(d.idle, c)
	d.mu.Unlock()
	return status, nil
}

// conn returns an idle connection, or dials one.
func (d *deliverer) conn(ctx context.Context) (*loadConn, error) {
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		c := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	return &loadConn{c: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

// roundTrip writes one POST of body with the headers h and reads the whole
// answer; keep is false when the server will close the connection.
func (c *loadConn) roundTrip(d *deliverer, h http.Header, body []byte) (status int, keep bool, err error) {
	if err := c.c.SetDeadline(time.Now().Add(sendTimeout)); err != nil {
		return 0, false, err
	}
	b := append(c.buf[:0], "POST "...)
	b = append(b, d.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, d.host...)
	b = append(b, "\r\nUser-Agent: ledger-bench\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	for k, vs := range h {
		for _, v := range vs {
			b = append(b, "\r\n"...)
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
		}
	}
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	c.buf = b
	if _, err := c.c.Write(b); err != nil {
		return 0, false, err
	}
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil {
		return res.StatusCode, false, err
	}
	return res.StatusCode, !res.Close, nil
}

// close closes the idle connections.
func (d *deliverer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.idle {
		c.c.Close()
	}
	d.idle = nil
	if d.client != nil {
		d.client.CloseIdleConnections()
	}
}
