package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// rawConn is a lean HTTP/1.1 client on one keep-alive connection, for
// load where the client must cost little next to the server it measures
// (the two share this machine's cores): the request is written from
// bytes prepared once, and of the answer only the status and the body's
// length are read. It speaks only what the API answers: a Content-Length
// body, no chunks.
type rawConn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	req  []byte
}

func newRawConn(addr string) *rawConn { return &rawConn{addr: addr} }

// post sends an empty POST to path with a bearer token and returns the
// answer's status and body. The body is only valid until the next call.
func (rc *rawConn) post(ctx context.Context, path, token string) (int, []byte, error) {
	if rc.c == nil {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", rc.addr)
		if err != nil {
			return 0, nil, err
		}
		rc.c, rc.r = c, bufio.NewReaderSize(c, 4096)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = rc.c.SetDeadline(dl.Add(10 * time.Second)) // a stuck answer ends the run, not the bench
	}
	rc.req = append(rc.req[:0], "POST "...)
	rc.req = append(rc.req, path...)
	rc.req = append(rc.req, " HTTP/1.1\r\nHost: "...)
	rc.req = append(rc.req, rc.addr...)
	rc.req = append(rc.req, "\r\nAuthorization: Bearer "...)
	rc.req = append(rc.req, token...)
	rc.req = append(rc.req, "\r\nContent-Length: 0\r\n\r\n"...)
	if _, err := rc.c.Write(rc.req); err != nil {
		rc.close()
		return 0, nil, err
	}
	status, body, err := rc.read()
	if err != nil {
		rc.close()
	}
	return status, body, err
}

var errNoLength = errors.New("rawhttp: an answer without Content-Length")

func (rc *rawConn) read() (int, []byte, error) {
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, fmt.Errorf("rawhttp: bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("rawhttp: bad status line %q", line)
	}
	length, closing := -1, false
	for {
		h, err := rc.r.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		if len(h) <= 2 {
			break // the blank line
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, nil, fmt.Errorf("rawhttp: bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			closing = true
		}
	}
	if length < 0 {
		return 0, nil, errNoLength
	}
	var body []byte
	if length > rc.r.Size() {
		body = make([]byte, length)
		if _, err := io.ReadFull(rc.r, body); err != nil {
			return 0, nil, err
		}
	} else {
		if body, err = rc.r.Peek(length); err != nil {
			return 0, nil, err
		}
		_, _ = rc.r.Discard(length) // body stays valid until the next read
	}
	if closing {
		rc.close()
	}
	return status, body, nil
}

func (rc *rawConn) close() {
	if rc.c != nil {
		rc.c.Close()
		rc.c = nil
	}
}
