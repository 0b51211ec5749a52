// Package httpapi is Hongbao's HTTP/JSON API: authentication by signed
// bearer tokens, idempotency keys on money-moving requests, one error
// table, metrics, health and the OpenAPI document.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hongbao/internal/dtx"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
)

// Options configure the API.
type Options struct {
	Secret []byte
	// MaxBody bounds request bodies (default 64 KiB).
	MaxBody int64
	// Timeout bounds each request (default 10 s).
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
	// AccessLog logs every request (method, route, status, duration,
	// request id) at info level.
	AccessLog bool
}

// Server serves the API over a running System.
type Server struct {
	b       Backend
	o       Options
	mux     *http.ServeMux
	routes  []route
	reg     *prometheus.Registry
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	tokens  *tokenCache
	// stop ends the live streams when the server shuts down (Stop).
	stop     chan struct{}
	stopOnce sync.Once
}

// Stop ends the live streams (register it with http.Server.RegisterOnShutdown,
// so that a drain does not wait for them).
func (s *Server) Stop() { s.stopOnce.Do(func() { close(s.stop) }) }

type route struct {
	method, pattern string
	auth            access
	idempotent      bool // money-moving: requires an Idempotency-Key
	h               func(r *http.Request, c Claims) (int, any, error)
}

type access int

const (
	public access = iota
	user
	admin
	// party: a user who is a party of what is read, or an operator; the
	// handler checks the party and answers 404 to anyone else.
	party
)

// New builds the API over its backend.
func New(b Backend, o Options) (*Server, error) {
	if len(o.Secret) < MinSecret {
		return nil, fmt.Errorf("httpapi: the token secret must be at least %d bytes", MinSecret)
	}
	if o.MaxBody == 0 {
		o.MaxBody = 64 << 10
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{b: b, o: o, mux: http.NewServeMux(), reg: prometheus.NewRegistry(), stop: make(chan struct{}), tokens: newTokenCache(100_000)}
	s.metrics()
	s.routes = []route{
		{"GET", "/v1/wallet", user, false, s.wallet},
		{"GET", "/v1/wallet/statement", user, false, s.statement},
		{"POST", "/v1/transfers", user, true, s.transfer},
		{"POST", "/v1/packets", user, true, s.sendPacket},
		{"POST", "/v1/packets/{id}/grab", user, false, s.grab},
		{"GET", "/v1/packets/{id}", party, false, s.packetDetail},
		{"GET", "/v1/packets/sent", user, false, s.sent},
		{"GET", "/v1/packets/received", user, false, s.received},
		{"POST", "/v1/groups", user, true, s.createGroup},
		{"GET", "/v1/groups/{id}", party, false, s.getGroup},
		{"POST", "/v1/groups/{id}/join", user, true, s.joinGroup},
		{"GET", "/v1/groups/{id}/members", party, false, s.members},
		{"POST", "/v1/admin/deposits", admin, true, s.deposit},
		{"GET", "/v1/admin/wallets/{user}", admin, false, s.adminWallet},
		{"GET", "/v1/admin/transactions", admin, false, s.transactions},
		{"GET", "/v1/admin/transactions/{gid}", admin, false, s.transaction},
		{"POST", "/v1/admin/transactions/{gid}/retry", admin, false, s.retryTransaction},
		{"GET", "/v1/admin/wallets/{user}/statement", admin, false, s.adminStatement},
	}
	if b.Operations != nil {
		s.routes = append(s.routes, route{"GET", "/v1/admin/overview", admin, false, s.overview},
			route{"GET", "/v1/admin/dead-letters", admin, false, s.deadLetters},
			route{"GET", "/v1/admin/dead-letters/{seq}", admin, false, s.deadLetter},
			route{"POST", "/v1/admin/dead-letters/{seq}/redrive", admin, false, s.redrive})
	}
	if b.Nodes != nil {
		s.routes = append(s.routes, route{"GET", "/v1/admin/nodes", admin, false, s.nodes})
	}
	if b.Migrations != nil {
		s.routes = append(s.routes, route{"POST", "/v1/admin/migrations", admin, false, s.startMigration},
			route{"GET", "/v1/admin/migrations", admin, false, s.migrations},
			route{"GET", "/v1/admin/migrations/{id}", admin, false, s.migration},
			route{"POST", "/v1/admin/migrations/{id}/cancel", admin, false, s.cancelMigration})
	}
	if b.Days != nil {
		s.routes = append(s.routes, route{"GET", "/v1/admin/partitions", admin, false, s.partitions},
			route{"POST", "/v1/admin/archive", admin, false, s.archive})
	}
	if b.Payments != nil {
		s.routes = append(s.routes,
			route{"POST", "/v1/topups", user, true, s.createOrder(payment.TopUp)},
			route{"GET", "/v1/topups", user, false, s.listOrders(payment.TopUp)},
			route{"GET", "/v1/topups/{id}", party, false, s.getOrder(payment.TopUp)},
			route{"POST", "/v1/withdrawals", user, true, s.createOrder(payment.Withdrawal)},
			route{"GET", "/v1/withdrawals", user, false, s.listOrders(payment.Withdrawal)},
			route{"GET", "/v1/withdrawals/{id}", party, false, s.getOrder(payment.Withdrawal)},
			route{"POST", "/v1/channel/notify", public, false, s.notify},
			route{"GET", "/v1/admin/channel/orders", admin, false, s.openOrders},
		)
	}
	if b.Feeds != nil {
		s.routes = append(s.routes,
			route{"GET", "/v1/conversations/{id}/events", party, false, s.feed},
			route{"GET", "/v1/conversations/{id}/stream", party, false, s.stream},
		)
	}
	if b.Webhooks != nil {
		s.routes = append(s.routes,
			route{"POST", "/v1/admin/webhooks", admin, false, s.registerWebhook},
			route{"GET", "/v1/admin/webhooks", admin, false, s.webhooks},
			route{"DELETE", "/v1/admin/webhooks/{id}", admin, false, s.removeWebhook},
			route{"GET", "/v1/admin/deliveries", admin, false, s.deliveries},
			route{"POST", "/v1/admin/deliveries/{id}/resend", admin, false, s.resend},
		)
	}
	if b.Recon != nil {
		s.routes = append(s.routes,
			route{"POST", "/v1/admin/recon", admin, false, s.runRecon},
			route{"GET", "/v1/admin/recon", admin, false, s.reconReports},
			route{"GET", "/v1/admin/recon/{day}", admin, false, s.latestRecon},
			route{"POST", "/v1/admin/recon/{day}/resolutions", admin, false, s.resolveRecon},
		)
	}
	allowed := map[string][]string{}
	for _, rt := range s.routes {
		s.mux.Handle(rt.method+" "+rt.pattern, s.wrap(rt))
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
	}
	// The routes by path alone: a path served with another method is 405
	// with Allow, not "no route".
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		allowed[p] = []string{"GET"}
	}
	paths := http.NewServeMux()
	for p := range allowed {
		paths.Handle(p, http.NotFoundHandler())
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.OpenAPI()) })
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, p := paths.Handler(r); p != "" && p != "/" {
			w.Header().Set("Allow", strings.Join(allowed[p], ", "))
			s.reqs.WithLabelValues("unmatched", "405").Inc()
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
				Message: fmt.Sprintf("%s is not served at %s: use %s", r.Method, p, strings.Join(allowed[p], ", "))})
			return
		}
		s.reqs.WithLabelValues("unmatched", "404").Inc()
		if s.o.AccessLog {
			s.o.Logger.Info("request", "method", r.Method, "route", "unmatched", "status", 404, "request_id", w.Header().Get("X-Request-Id"))
		}
		writeError(w, &apiError{Status: http.StatusNotFound, Code: "no_route", Message: "no such route: " + r.Method + " " + strconv.Quote(r.URL.Path)})
	})
	return s, nil
}

// Handler is the root handler. A path that is not clean (//x, /./x, /x/)
// is not redirected: it is no route, answered in JSON like any other.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", requestID(r))
		if p := r.URL.Path; p == "" || p[0] != '/' || (p != "/" && path.Clean(p) != p) {
			writeError(w, &apiError{Status: http.StatusNotFound, Code: "no_route", Message: "no such route: " + r.Method + " " + strconv.Quote(p)})
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) wrap(rt route) http.Handler {
	name := rt.method + " " + rt.pattern
	// The route's series, found once: a lookup by label values hashes
	// them on every request.
	latency := s.latency.WithLabelValues(name)
	var counted sync.Map // status -> prometheus.Counter
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := w.Header().Get("X-Request-Id")
		status := s.serve(w, r, rt)
		took := time.Since(start)
		c, ok := counted.Load(status)
		if !ok {
			c, _ = counted.LoadOrStore(status, s.reqs.WithLabelValues(name, strconv.Itoa(status)))
		}
		c.(prometheus.Counter).Inc()
		latency.Observe(took.Seconds())
		if s.o.AccessLog {
			s.o.Logger.Info("request", "method", r.Method, "route", rt.pattern, "status", status,
				"duration_ms", float64(took.Microseconds())/1000, "request_id", id)
		}
	})
}

// requestID is the client's X-Request-Id when it is a short printable
// token, else a fresh one: this process's random prefix and a counter
// (unique without a random read a request).
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 64 && checkKey(id) == nil {
		return id
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[8:], requestSeq.Add(1))
	copy(b[:8], requestPrefix[:])
	return hex.EncodeToString(b[:])
}

var (
	requestPrefix = func() (p [8]byte) { _, _ = rand.Read(p[:]); return p }()
	requestSeq    atomic.Uint64
)

// created is a 201 answer with the Location of what was made.
type created struct {
	location string
	body     any
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, rt route) (status int) {
	defer func() {
		if p := recover(); p != nil {
			s.o.Logger.Error("handler panicked", "route", rt.pattern, "panic", fmt.Sprint(p))
			status = http.StatusInternalServerError
			writeError(w, &apiError{Status: status, Code: "internal", Message: "internal error"})
		}
	}()
	long := r.Context() // a live stream lasts as long as its client
	ctx, cancel := context.WithTimeout(r.Context(), s.o.Timeout)
	defer cancel()
	r = r.WithContext(ctx)
	r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBody)
	var c Claims
	if rt.auth != public {
		var err error
		if c, err = s.authenticate(r); err != nil {
			return writeError(w, toAPIError(err))
		}
		if rt.auth == admin && !c.Admin {
			return writeError(w, &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: "this needs an admin token"})
		}
		if rt.auth == user && c.User <= 0 {
			return writeError(w, &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: "this needs a user token"})
		}
		if rt.auth == party && c.User <= 0 && !c.Admin {
			return writeError(w, &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: "this needs a user or an admin token"})
		}
	}
	if rt.idempotent {
		if err := checkKey(r.Header.Get("Idempotency-Key")); err != nil {
			return writeError(w, err)
		}
	}
	code, body, err := rt.h(r, c)
	if err != nil {
		ae := toAPIError(err)
		switch {
		case ae.Status == http.StatusServiceUnavailable: // retry later (a slot moving, a set changing hands): expected
			s.o.Logger.Warn("request told to retry", "route", rt.pattern, "err", err, "request_id", w.Header().Get("X-Request-Id"))
		case ae.Status >= 500:
			s.o.Logger.Error("request failed", "route", rt.pattern, "err", err, "request_id", w.Header().Get("X-Request-Id"))
		}
		return writeError(w, ae)
	}
	if st, ok := body.(streamer); ok {
		st(long, w)
		return 200
	}
	if cr, ok := body.(created); ok {
		w.Header().Set("Location", cr.location)
		body = cr.body
	}
	writeJSON(w, code, body)
	return code
}

func (s *Server) authenticate(r *http.Request) (Claims, error) {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer " // the scheme is case-insensitive (RFC 9110)
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return Claims{}, ErrNoToken
	}
	return s.tokens.verify(s.o.Secret, h[len(prefix):], s.o.Now())
}

func checkKey(k string) *apiError {
	if k == "" {
		return bad("idempotency_key_required", "money-moving requests need an Idempotency-Key header (retry with the same key)")
	}
	if len(k) > 128 {
		return bad("bad_idempotency_key", "Idempotency-Key is longer than 128 characters")
	}
	for _, r := range k {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return bad("bad_idempotency_key", "Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = contentJSON
	w.WriteHeader(status)
	if a, ok := v.(jsonAppender); ok {
		// The hot answers, written without reflection: the same bytes as
		// the encoder's (TestLeanAnswers).
		buf := answerBufs.Get().(*[]byte)
		*buf = append(a.appendJSON((*buf)[:0]), '\n')
		_, _ = w.Write(*buf)
		answerBufs.Put(buf)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

var contentJSON = []string{"application/json"}

// jsonAppender is an answer that writes its own JSON, byte for byte what
// encoding/json would write for it.
type jsonAppender interface{ appendJSON(b []byte) []byte }

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeError answers an RFC 9457 problem: type, title, status and detail,
// plus the stable code (and the detail again as message, for clients of the
// first version).
func writeError(w http.ResponseWriter, e *apiError) int {
	if e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(problem{Type: "urn:hongbao:problem:" + e.Code, Title: http.StatusText(e.Status), Status: e.Status,
		Detail: e.Message, Code: e.Code, Message: e.Message})
	return e.Status
}

// problem is the body of every error (RFC 9457).
type problem struct {
	Type    string `json:"type"`
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Detail  string `json:"detail"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func pathID(r *http.Request, name string) (int64, error) {
	v, ok := digitsInt(r.PathValue(name))
	if !ok || v <= 0 || (name == "user" && v > maxUserID) {
		return 0, bad("bad_id", fmt.Sprintf("%s %q is not a positive id", name, r.PathValue(name)))
	}
	return v, nil
}

// digitsInt reads a whole number written only with digits (no sign, no
// spaces), as ids and cursors are.
func digitsInt(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

func queryInt(r *http.Request, name string, def int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, ok := digitsInt(s)
	if !ok {
		return 0, bad("bad_query", fmt.Sprintf("%s=%q is not a whole number", name, s))
	}
	return v, nil
}

// queryLimit reads a page size: def when absent, else 1..max.
func queryLimit(r *http.Request, def, max int64) (int, error) {
	v, err := queryInt(r, "limit", def)
	if err != nil {
		return 0, err
	}
	if v < 1 || v > max {
		return 0, bad("bad_query", fmt.Sprintf("limit must be 1..%d", max))
	}
	return int(v), nil
}

func queryBool(r *http.Request, name string) (bool, error) {
	switch s := r.URL.Query().Get(name); s {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, bad("bad_query", fmt.Sprintf("%s=%q: want true or false", name, s))
	}
}

func idemKey(r *http.Request) string { return r.Header.Get("Idempotency-Key") }

// ---- wallets ----

func (s *Server) wallet(r *http.Request, c Claims) (int, any, error) {
	w, err := s.b.Wallets.Wallet(r.Context(), c.User)
	return 200, w, err
}

func (s *Server) adminWallet(r *http.Request, _ Claims) (int, any, error) {
	u, err := pathID(r, "user")
	if err != nil {
		return 0, nil, err
	}
	w, err := s.b.Wallets.Wallet(r.Context(), u)
	return 200, w, err
}

func (s *Server) statement(r *http.Request, c Claims) (int, any, error) {
	return s.statementOf(r, c.User)
}

// statementOf is a page of a user's statement, newest first.
func (s *Server) statementOf(r *http.Request, user int64) (int, any, error) {
	before, err := queryInt(r, "cursor", 0)
	if err != nil {
		return 0, nil, err
	}
	limit, err := queryLimit(r, 50, 1000)
	if err != nil {
		return 0, nil, err
	}
	es, next, err := s.b.Wallets.Statement(r.Context(), user, before, limit)
	if err != nil {
		return 0, nil, err
	}
	page := map[string]any{"entries": nonNil(es), "next": nil} // null: no more
	if next > 0 {
		page["next"] = strconv.FormatInt(next, 10)
	} else if s.b.Days != nil {
		// The last page: say so when older days were archived.
		through, err := s.b.Days.ArchivedThrough(r.Context(), user)
		if err != nil {
			return 0, nil, err
		}
		if !through.IsZero() {
			page["archived_before"] = through.Format(time.DateOnly)
		}
	}
	return 200, page, nil
}

type depositRequest struct {
	User   int64        `json:"user"`
	Amount money.Amount `json:"amount"`
}

func (s *Server) deposit(r *http.Request, _ Claims) (int, any, error) {
	var req depositRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.User <= 0 {
		return 0, nil, bad("invalid_request", "user must be a positive id")
	}
	if req.Amount <= 0 {
		return 0, nil, bad("bad_amount", "amount must be at least 0.01")
	}
	res, err := s.b.Wallets.Deposit(r.Context(), idemKey(r), 0, req.User, req.Amount)
	return 200, res, err
}

type transferRequest struct {
	To     int64        `json:"to"`
	Amount money.Amount `json:"amount"`
}

func (s *Server) transfer(r *http.Request, c Claims) (int, any, error) {
	var req transferRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.To <= 0 || req.To == c.User {
		return 0, nil, bad("invalid_request", "to must be another user's id")
	}
	if req.Amount <= 0 {
		return 0, nil, bad("bad_amount", "amount must be at least 0.01")
	}
	res, err := s.b.Wallets.Transfer(r.Context(), idemKey(r), c.User, req.To, req.Amount)
	if err != nil {
		return 0, nil, err
	}
	return outcome(res, res)
}

// outcome turns a global transaction's result into a status: 200 done,
// 202 still being driven (ask again with the same key), 409 cancelled.
func outcome(res dtx.Result, body any) (int, any, error) {
	switch res.Outcome {
	case dtx.OutcomeCommitted:
		return 200, body, nil
	case dtx.OutcomeCancelled:
		return 0, nil, &apiError{Status: http.StatusConflict, Code: "cancelled", Message: "not done, nothing changed: " + reason(res.Reason)}
	}
	return 202, body, nil
}

// reasons say why a transaction was cancelled in a user's words; the
// coordinator's reason names internal keys and branches.
var reasons = []struct{ has, says string }{
	{ledger.ErrInsufficientFunds.Error(), "insufficient available balance"},
	{ledger.ErrBalanceLimit.Error(), "the receiving wallet would exceed its maximum balance"},
	{group.ErrGroupFull.Error(), "the group is full"},
	{group.ErrBanned.Error(), "the user is banned from the group"},
	{"recovered before every try succeeded", "interrupted before it could finish (retry with a new key)"},
	{"try deadline", "a participant did not answer in time (retry with a new key)"},
}

func reason(internal string) string {
	for _, r := range reasons {
		if strings.Contains(internal, r.has) {
			return r.says
		}
	}
	return "cancelled"
}

// ---- packets ----

type sendRequest struct {
	Kind      packet.Kind  `json:"kind"`
	Receiver  int64        `json:"receiver"`
	Group     int64        `json:"group"`
	Amount    money.Amount `json:"amount"`
	Shares    int          `json:"shares"`
	Greeting  string       `json:"greeting"`
	ExpiresIn int          `json:"expires_in_seconds"`
}

func (s *Server) sendPacket(r *http.Request, c Claims) (int, any, error) {
	var req sendRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.ExpiresIn < 0 || req.ExpiresIn > 7*24*3600 {
		return 0, nil, bad("invalid_request", "expires_in_seconds must be 0 (the default, 24 h) up to 604800")
	}
	if req.Kind == packet.Single && req.Shares == 0 {
		req.Shares = 1
	}
	p := packet.Packet{Kind: req.Kind, Sender: c.User, Receiver: req.Receiver, Group: req.Group, Amount: req.Amount, Shares: req.Shares, Greeting: req.Greeting}
	sent, res, err := s.b.Packets.SendPacket(r.Context(), idemKey(r), p, time.Duration(req.ExpiresIn)*time.Second)
	if err != nil {
		return 0, nil, err
	}
	code, body, err := outcome(res, sent)
	if code == 200 {
		return 201, created{fmt.Sprintf("/v1/packets/%d", sent.ID), sent}, nil
	}
	return code, body, err
}

type grabResponse struct {
	Claim packet.Claim `json:"claim"`
}

// appendJSON is the grab's answer, the hottest of all: what json.Marshal
// writes for it (packet.Claim's tags), without reflection.
func (g grabResponse) appendJSON(b []byte) []byte {
	c := g.Claim
	b = append(b, `{"claim":{"id":"`...)
	b = strconv.AppendInt(b, c.ID, 10)
	b = append(b, `","packet_id":"`...)
	b = strconv.AppendInt(b, c.PacketID, 10)
	b = append(b, `","user":`...)
	b = strconv.AppendInt(b, c.User, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, int64(c.Seq), 10)
	b = append(b, `,"amount":"`...)
	b = c.Amount.AppendText(b)
	b = append(b, `","at":"`...)
	b = c.At.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","credited":`...)
	b = strconv.AppendBool(b, c.Credited)
	return append(b, "}}"...)
}

func (s *Server) grab(r *http.Request, c Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	if err := decodeEmpty(r); err != nil {
		return 0, nil, err
	}
	cl, err := s.b.Packets.Grab(r.Context(), id, c.User)
	if errors.Is(err, packet.ErrNotOwner) && s.b.Forward != nil && r.Header.Get(ForwardedHeader) == "" {
		// Another node owns the set: it answers, through us.
		return 200, streamer(func(ctx context.Context, w http.ResponseWriter) { s.forward(ctx, w, r, id) }), nil
	}
	if err != nil {
		return 0, nil, err
	}
	return 200, grabResponse{Claim: cl}, nil
}

func (s *Server) packetDetail(r *http.Request, c Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	d, err := s.b.Packets.PacketDetail(r.Context(), id)
	if err != nil {
		return 0, nil, err
	}
	// A cancelled send changed nothing: its packet does not exist for anyone
	// but an operator. Otherwise only its parties may read it.
	if !c.Admin {
		ok, err := s.isParty(r.Context(), d, c.User)
		if err != nil {
			return 0, nil, err
		}
		if !ok || d.Packet.State == packet.StateCancelled {
			return 0, nil, fmt.Errorf("%w: %d", packet.ErrNotFound, id)
		}
	}
	return 200, d, nil
}

// isParty reports whether user is the sender, the receiver, a claimant or
// (for a group packet) a member of the group.
func (s *Server) isParty(ctx context.Context, d packet.Detail, user int64) (bool, error) {
	p := d.Packet
	if user == p.Sender || (p.Kind == packet.Single && user == p.Receiver) {
		return true, nil
	}
	for _, cl := range d.Claims {
		if cl.User == user {
			return true, nil
		}
	}
	if p.Kind == packet.Single {
		return false, nil
	}
	in, err := s.b.Groups.IsMember(ctx, p.Group, user)
	if errors.Is(err, group.ErrNotFound) {
		return false, nil
	}
	return in, err
}

// groupReader checks that the caller may read group id: a member or an
// operator; anyone else is told it does not exist.
func (s *Server) groupReader(ctx context.Context, id int64, c Claims) error {
	if c.Admin {
		_, err := s.b.Groups.Group(ctx, id)
		return err
	}
	in, err := s.b.Groups.IsMember(ctx, id, c.User)
	if err != nil && !errors.Is(err, group.ErrNotFound) {
		return err
	}
	if !in {
		return fmt.Errorf("%w: %d", group.ErrNotFound, id) // the same words whether it exists or not
	}
	return nil
}

// Every list is paged the same way: ?cursor= (absent for the first page)
// and ?limit=, and the answer's "next" is the cursor of the following page,
// null when there is none.

func (s *Server) sent(r *http.Request, c Claims) (int, any, error) {
	before, limit, err := page(r, 50, 500)
	if err != nil {
		return 0, nil, err
	}
	ps, err := s.b.Packets.Sent(r.Context(), c.User, before, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"packets": nonNil(ps), "next": next(len(ps), limit, func() string { return strconv.FormatInt(ps[len(ps)-1].ID, 10) })}, nil
}

func (s *Server) received(r *http.Request, c Claims) (int, any, error) {
	limit, err := queryLimit(r, 50, 500)
	if err != nil {
		return 0, nil, err
	}
	var at time.Time
	var id int64
	if cur := r.URL.Query().Get("cursor"); cur != "" {
		ns, rest, cut := strings.Cut(cur, ".")
		n, ok1 := digitsInt(ns)
		var ok2 bool
		id, ok2 = digitsInt(rest)
		if !cut || !ok1 || !ok2 {
			return 0, nil, bad("bad_query", fmt.Sprintf("cursor=%q is not a cursor this list gave", cur))
		}
		at = time.Unix(0, n)
	}
	cs, err := s.b.Packets.Received(r.Context(), c.User, at, id, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"claims": nonNil(cs), "next": next(len(cs), limit, func() string {
		last := cs[len(cs)-1]
		return fmt.Sprintf("%d.%d", last.At.UnixNano(), last.ID)
	})}, nil
}

// next is the cursor of the following page: null when this one was not full.
func next(n, limit int, last func() string) any {
	if n < limit || n == 0 {
		return nil
	}
	return last()
}

func page(r *http.Request, def, max int64) (int64, int, error) {
	before, err := queryInt(r, "cursor", 0)
	if err != nil {
		return 0, 0, err
	}
	limit, err := queryLimit(r, def, max)
	if err != nil {
		return 0, 0, err
	}
	return before, limit, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ---- groups ----

type createGroupRequest struct {
	Capacity int          `json:"capacity"`
	Fee      money.Amount `json:"fee"`
}

func (s *Server) createGroup(r *http.Request, c Claims) (int, any, error) {
	var req createGroupRequest
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	g, err := s.b.Groups.CreateGroup(r.Context(), idemKey(r), c.User, req.Capacity, req.Fee)
	if err != nil {
		return 0, nil, err
	}
	return 201, created{fmt.Sprintf("/v1/groups/%d", g.ID), g}, nil
}

func (s *Server) getGroup(r *http.Request, c Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	if err := s.groupReader(r.Context(), id, c); err != nil {
		return 0, nil, err
	}
	g, err := s.b.Groups.Group(r.Context(), id)
	return 200, g, err
}

func (s *Server) joinGroup(r *http.Request, c Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	if err := decodeEmpty(r); err != nil {
		return 0, nil, err
	}
	res, err := s.b.Groups.JoinGroup(r.Context(), idemKey(r), c.User, id)
	if err != nil {
		return 0, nil, err
	}
	return outcome(res, res)
}

func (s *Server) members(r *http.Request, c Claims) (int, any, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return 0, nil, err
	}
	if err := s.groupReader(r.Context(), id, c); err != nil {
		return 0, nil, err
	}
	after, limit, err := page(r, 100, 1000)
	if err != nil {
		return 0, nil, err
	}
	ms, err := s.b.Groups.Members(r.Context(), id, after, limit)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"members": nonNil(ms), "next": next(len(ms), limit, func() string { return strconv.FormatInt(ms[len(ms)-1].User, 10) })}, nil
}

// ---- operators ----

func (s *Server) transactions(r *http.Request, _ Claims) (int, any, error) {
	f, err := txFilter(r)
	if err != nil {
		return 0, nil, err
	}
	gs, err := s.b.Transactions.List(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	return 200, map[string]any{"transactions": nonNil(gs), "next": next(len(gs), f.Limit, func() string {
		return strconv.FormatInt(gs[len(gs)-1].CreatedAt.UnixNano(), 10)
	})}, nil
}

func (s *Server) transaction(r *http.Request, _ Claims) (int, any, error) {
	if err := textValue("gid", r.PathValue("gid"), 512); err != nil {
		return 0, nil, err
	}
	g, err := s.b.Transactions.Get(r.Context(), r.PathValue("gid"))
	return 200, g, err
}

// ---- health and metrics ----

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if s.b.Ready != nil {
		if err := s.b.Ready(ctx); err != nil {
			writeError(w, &apiError{Status: 503, Code: "unavailable", Message: err.Error()})
			return
		}
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

// unfinished counts unfinished and stuck global transactions for a scrape
// (-1 when the log cannot be read).
func (s *Server) unfinished() (all, stuck int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	all, stuck, err := s.b.Transactions.Unfinished(ctx, 5*time.Minute)
	if err != nil {
		return -1, -1
	}
	return all, stuck
}

func (s *Server) metrics() {
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hongbao_http_requests_total", Help: "HTTP requests by route and status."}, []string{"route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hongbao_http_request_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"route"})
	s.reg.MustRegister(s.reqs, s.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hongbao_coordinator_unfinished", Help: "Global transactions not yet committed or cancelled."}, func() float64 {
			all, _ := s.unfinished()
			return float64(all)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hongbao_coordinator_stuck", Help: "Global transactions unfinished for more than 5 minutes (alert on any: a confirm or compensation keeps failing)."}, func() float64 {
			_, old := s.unfinished()
			return float64(old)
		}),
	)
	s.reg.MustRegister(s.b.Collectors...)
}
