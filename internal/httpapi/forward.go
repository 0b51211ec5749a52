package httpapi

import (
	"context"
	"io"
	"net/http"
	"time"
)

// ForwardedHeader marks a request one node sent on to another; the owner
// answers it itself and never forwards it again.
const ForwardedHeader = "X-Hongbao-Forwarded"

// forward sends a grab on to the owner of its set, once more after a short
// pause if the ownership was moving, and answers what the owner answered.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, packetID int64) {
	var resp *http.Response
	var err error
	for attempt := range 2 {
		resp, err = s.b.Forward(ctx, packetID, r)
		if err == nil && resp.StatusCode != http.StatusServiceUnavailable {
			break
		}
		if resp != nil && attempt == 0 {
			resp.Body.Close()
			resp = nil
		}
		if attempt == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	if err != nil || resp == nil {
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Code: "retry", Message: "the packet's set is moving to another node; retry"})
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Retry-After", "Allow"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}

func (s *Server) nodes(r *http.Request, _ Claims) (int, any, error) {
	v, err := s.b.Nodes(r.Context())
	return 200, v, err
}
