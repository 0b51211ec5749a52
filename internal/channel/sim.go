package channel

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"hongbao/internal/money"
)

// Knobs are the simulator's faults, each a probability in [0, 1] unless
// said otherwise. They change at run time (SetKnobs, POST /control/knobs).
type Knobs struct {
	Latency     time.Duration `json:"latency"`      // added to every answer
	LoseAnswer  float64       `json:"lose_answer"`  // do the work, then answer 504 (the answer is lost)
	Fail5xx     float64       `json:"fail_5xx"`     // answer 503 without doing the work
	SystemError float64       `json:"system_error"` // answer 200 {"code":"SYSTEMERROR"} without doing the work
	// Payouts end as PayoutOutcome: succeeded, failed or processing (then
	// resolved by POST /control/payout/{id}).
	PayoutOutcome string `json:"payout_outcome"`
	// Callbacks of paid orders: dropped, sent twice, or late.
	DropCallback      float64       `json:"drop_callback"`
	DuplicateCallback float64       `json:"duplicate_callback"`
	CallbackDelay     time.Duration `json:"callback_delay"`
	// AutoPay pays every new order after this delay (0: only by
	// POST /control/pay/{id}, as a payer would).
	AutoPay time.Duration `json:"auto_pay"`
}

// Simulator is a payment channel modelled on how WeChat Pay and Alipay
// behave, served over HTTP (see Handler). Requests must be signed with the
// merchant secret; callbacks to the notify URL are signed with it too.
type Simulator struct {
	secret []byte
	now    func() time.Time
	client *http.Client

	mu      sync.Mutex
	knobs   Knobs
	pays    map[string]*simPay
	payouts map[string]*Payout
	paidOut int // payouts that moved money (a repeat never does)
	// extra statement lines: discrepancies injected by the control API.
	extra []Line
	rng   *rand.Rand
	// file, when set, is where every change is appended (Persist).
	file *os.File
	// Prefix is the path the simulator is mounted under (pay URLs carry it).
	Prefix string
}

// simRecord is one line of the file Persist keeps: what one change left.
type simRecord struct {
	Pay     *PayOrder `json:"pay,omitempty"`
	Notify  string    `json:"notify,omitempty"`
	Payout  *Payout   `json:"payout,omitempty"`
	Extra   *Line     `json:"extra,omitempty"`
	PaidOut int       `json:"paid_out,omitempty"`
}

// Persist keeps the simulator's orders in a file, so that a process that
// serves it can be killed and restarted like a real channel that never
// forgets: the file is replayed now if it exists, and every change is
// appended to it (one JSON line) before it is answered.
func (s *Simulator) Persist(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range bytes.Split(b, []byte{'\n'}) {
			var r simRecord
			if len(line) == 0 || json.Unmarshal(line, &r) != nil {
				continue // a line cut short by a crash changed nothing
			}
			switch {
			case r.Pay != nil:
				s.pays[r.Pay.ID] = &simPay{PayOrder: *r.Pay, notify: r.Notify}
			case r.Payout != nil:
				p := *r.Payout
				s.payouts[p.ID] = &p
			case r.Extra != nil:
				s.extra = append(s.extra, *r.Extra)
			}
			if r.PaidOut > 0 {
				s.paidOut = r.PaidOut
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("channel simulator state %s: %w", path, err)
	}
	s.file = f
	return nil
}

// save appends a change when persisted; s.mu is held.
func (s *Simulator) save(r simRecord) {
	if s.file == nil {
		return
	}
	r.PaidOut = s.paidOut
	b, _ := json.Marshal(r)
	_, _ = s.file.Write(append(b, '\n'))
}

// Close closes the state file.
func (s *Simulator) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}

type simPay struct {
	PayOrder
	notify string
}

// NewSimulator returns a simulator signing with secret.
func NewSimulator(secret []byte, k Knobs) *Simulator {
	if k.PayoutOutcome == "" {
		k.PayoutOutcome = PayoutSucceeded
	}
	return &Simulator{secret: secret, now: time.Now, client: &http.Client{Timeout: 5 * time.Second}, knobs: k,
		pays: map[string]*simPay{}, payouts: map[string]*Payout{}, rng: rand.New(rand.NewPCG(1, 2))}
}

// SetKnobs changes the faults.
func (s *Simulator) SetKnobs(k Knobs) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k.PayoutOutcome == "" {
		k.PayoutOutcome = PayoutSucceeded
	}
	s.knobs = k
}

// PaidOut is how many payouts moved money.
func (s *Simulator) PaidOut() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paidOut
}

func (s *Simulator) roll(p float64) bool { return p > 0 && s.rng.Float64() < p }

// Handler serves the channel's API and its control endpoints.
func (s *Simulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /pay", s.signed(s.createPay))
	mux.HandleFunc("GET /pay/{id}", s.signed(s.queryPay))
	mux.HandleFunc("POST /pay/{id}/close", s.signed(s.closePay))
	mux.HandleFunc("POST /payout", s.signed(s.payout))
	mux.HandleFunc("GET /payout/{id}", s.signed(s.queryPayout))
	mux.HandleFunc("GET /statement", s.signed(s.statement))
	mux.HandleFunc("POST /control/pay/{id}", s.signed(func(r *http.Request, _ []byte) (int, any) {
		return s.pay(r.PathValue("id"))
	}))
	// The payer's page: what a client opens at an order's pay URL. It
	// needs no merchant signature (the payer has none).
	mux.HandleFunc("POST /checkout/{id}", func(w http.ResponseWriter, r *http.Request) {
		status, out := s.pay(r.PathValue("id"))
		writeSim(w, status, out)
	})
	mux.HandleFunc("POST /control/payout/{id}", s.signed(func(r *http.Request, body []byte) (int, any) {
		var req struct{ State string }
		_ = json.Unmarshal(body, &req)
		s.mu.Lock()
		defer s.mu.Unlock()
		p, ok := s.payouts[r.PathValue("id")]
		if !ok {
			return 404, map[string]string{"code": "ORDERNOTEXIST"}
		}
		if p.State == PayoutProcessing && (req.State == PayoutSucceeded || req.State == PayoutFailed) {
			p.State, p.DoneAt = req.State, s.now().UTC().Truncate(time.Microsecond)
			if req.State == PayoutSucceeded {
				s.paidOut++
			}
			s.save(simRecord{Payout: p})
		}
		return 200, *p
	}))
	mux.HandleFunc("POST /control/knobs", s.signed(func(_ *http.Request, body []byte) (int, any) {
		var k Knobs
		if err := json.Unmarshal(body, &k); err != nil {
			return 400, map[string]string{"code": "PARAM_ERROR"}
		}
		s.SetKnobs(k)
		return 200, k
	}))
	// A statement discrepancy: the line replaces the channel's own line of
	// the same kind and id on its day (another amount, a reversed payout),
	// is added when there is none (a payment we never heard of), and with
	// state "absent" removes it (a payment missing from the statement).
	mux.HandleFunc("POST /control/statement", s.signed(func(_ *http.Request, body []byte) (int, any) {
		var l Line
		if err := json.Unmarshal(body, &l); err != nil || (l.Kind != LinePay && l.Kind != LinePayout) || l.ID == "" {
			return 400, map[string]string{"code": "PARAM_ERROR"}
		}
		s.Inject(l)
		return 200, l
	}))
	return mux
}

// signed checks the request's signature, applies the faults and writes
// the answer.
func (s *Simulator) signed(h func(r *http.Request, body []byte) (int, any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := Verify(r.Header, s.secret, body, s.now()); err != nil {
			writeSim(w, 401, map[string]string{"code": "SIGN_ERROR"})
			return
		}
		s.mu.Lock()
		k := s.knobs
		fail, sysErr, lose := s.roll(k.Fail5xx), s.roll(k.SystemError), s.roll(k.LoseAnswer)
		s.mu.Unlock()
		if k.Latency > 0 {
			time.Sleep(k.Latency)
		}
		control := len(r.URL.Path) > 9 && r.URL.Path[:9] == "/control/"
		if !control && fail {
			writeSim(w, 503, map[string]string{"code": "SERVICE_UNAVAILABLE"})
			return
		}
		if !control && sysErr {
			writeSim(w, 200, map[string]string{"code": "SYSTEMERROR"})
			return
		}
		status, out := h(r, body)
		if !control && lose {
			writeSim(w, 504, map[string]string{"code": "GATEWAY_TIMEOUT"}) // done, but the caller never hears
			return
		}
		writeSim(w, status, out)
	}
}

func writeSim(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Simulator) createPay(r *http.Request, body []byte) (int, any) {
	var req struct {
		ID        string       `json:"id"`
		Amount    money.Amount `json:"amount"`
		NotifyURL string       `json:"notify_url"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.ID == "" || req.Amount <= 0 {
		return 400, map[string]string{"code": "PARAM_ERROR"}
	}
	s.mu.Lock()
	p, ok := s.pays[req.ID]
	if ok && p.Amount != req.Amount {
		s.mu.Unlock()
		return 409, map[string]string{"code": "OUT_TRADE_NO_USED"}
	}
	if !ok {
		p = &simPay{PayOrder: PayOrder{ID: req.ID, Amount: req.Amount, State: PayCreated, PayURL: "http://" + r.Host + s.Prefix + "/checkout/" + req.ID}, notify: req.NotifyURL}
		s.pays[req.ID] = p
		s.save(simRecord{Pay: &p.PayOrder, Notify: p.notify})
		if d := s.knobs.AutoPay; d > 0 {
			time.AfterFunc(d, func() { s.pay(req.ID) })
		}
	}
	out := p.PayOrder
	s.mu.Unlock()
	return 200, out
}

func (s *Simulator) queryPay(r *http.Request, _ []byte) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pays[r.PathValue("id")]
	if !ok {
		return 404, map[string]string{"code": "ORDERNOTEXIST"}
	}
	return 200, p.PayOrder
}

func (s *Simulator) closePay(r *http.Request, _ []byte) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pays[r.PathValue("id")]
	if !ok {
		return 404, map[string]string{"code": "ORDERNOTEXIST"}
	}
	if p.State == PayCreated {
		p.State = PayClosed
		s.save(simRecord{Pay: &p.PayOrder, Notify: p.notify})
	}
	return 200, p.PayOrder // paid meanwhile: says so
}

// pay is the payer paying an order; the channel then calls the notify URL.
func (s *Simulator) pay(id string) (int, any) {
	s.mu.Lock()
	p, ok := s.pays[id]
	if !ok {
		s.mu.Unlock()
		return 404, map[string]string{"code": "ORDERNOTEXIST"}
	}
	if p.State == PayCreated {
		p.State, p.PaidAt = PayPaid, s.now().UTC().Truncate(time.Microsecond)
		s.save(simRecord{Pay: &p.PayOrder, Notify: p.notify})
		k := s.knobs
		drop, dup := s.roll(k.DropCallback), s.roll(k.DuplicateCallback)
		order, notify := p.PayOrder, p.notify
		s.mu.Unlock()
		if notify != "" && !drop {
			go func() {
				time.Sleep(k.CallbackDelay)
				s.callback(notify, order)
				if dup {
					s.callback(notify, order)
				}
			}()
		}
		return 200, order
	}
	out := p.PayOrder
	s.mu.Unlock()
	return 200, out
}

// callback posts a paid order to the notify URL, signed, retrying a few
// times until a 2xx (a real channel retries for hours; the order can
// always be queried).
func (s *Simulator) callback(url string, o PayOrder) {
	body, _ := json.Marshal(o)
	for attempt := range 3 {
		req, err := http.NewRequest("POST", url, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		Sign(req.Header, s.secret, body, s.now())
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return
			}
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
}

func (s *Simulator) payout(_ *http.Request, body []byte) (int, any) {
	var req struct {
		ID     string       `json:"id"`
		User   int64        `json:"user"`
		Amount money.Amount `json:"amount"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.ID == "" || req.Amount <= 0 {
		return 400, map[string]string{"code": "PARAM_ERROR"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.payouts[req.ID]; ok { // the same order id never pays twice
		if p.Amount != req.Amount || p.User != req.User {
			return 409, map[string]string{"code": "OUT_TRADE_NO_USED"}
		}
		return 200, *p
	}
	p := &Payout{ID: req.ID, User: req.User, Amount: req.Amount, State: s.knobs.PayoutOutcome}
	if p.State != PayoutProcessing {
		p.DoneAt = s.now().UTC().Truncate(time.Microsecond)
	}
	switch p.State {
	case PayoutSucceeded:
		s.paidOut++
	case PayoutFailed:
		p.Reason = "account frozen"
	}
	s.payouts[req.ID] = p
	s.save(simRecord{Payout: p})
	return 200, *p
}

func (s *Simulator) queryPayout(r *http.Request, _ []byte) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.payouts[r.PathValue("id")]
	if !ok {
		return 404, map[string]string{"code": "ORDERNOTEXIST"}
	}
	return 200, *p
}

// Inject adds a statement discrepancy (see POST /control/statement).
func (s *Simulator) Inject(l Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = append(s.extra, l)
	s.save(simRecord{Extra: &l})
}

// Lines is the day's statement: every order paid and every payout made
// definite that day, with the injected discrepancies applied.
func (s *Simulator) Lines(day time.Time) []Line {
	s.mu.Lock()
	byKey := map[string]Line{}
	for _, p := range s.pays {
		if p.State == PayPaid && sameDay(p.PaidAt, day) {
			byKey[LinePay+p.ID] = Line{Kind: LinePay, ID: p.ID, Amount: p.Amount, State: p.State, At: p.PaidAt}
		}
	}
	for _, p := range s.payouts {
		if p.State != PayoutProcessing && sameDay(p.DoneAt, day) {
			byKey[LinePayout+p.ID] = Line{Kind: LinePayout, ID: p.ID, Amount: p.Amount, State: p.State, At: p.DoneAt}
		}
	}
	for _, l := range s.extra {
		if !sameDay(l.At, day) {
			continue
		}
		if l.State == "absent" {
			delete(byKey, l.Kind+l.ID)
		} else {
			byKey[l.Kind+l.ID] = l
		}
	}
	s.mu.Unlock()
	lines := make([]Line, 0, len(byKey))
	for _, l := range byKey {
		lines = append(lines, l)
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].Kind+lines[i].ID < lines[j].Kind+lines[j].ID })
	return lines
}

// statement answers the day's CSV: kind,id,amount,state,at (see Lines).
func (s *Simulator) statement(r *http.Request, _ []byte) (int, any) {
	day, err := time.Parse("2006-01-02", r.URL.Query().Get("day"))
	if err != nil {
		return 400, map[string]string{"code": "PARAM_ERROR"}
	}
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write([]string{"kind", "id", "amount", "state", "at"})
	for _, l := range s.Lines(day) {
		_ = cw.Write([]string{l.Kind, l.ID, l.Amount.String(), l.State, l.At.UTC().Format(time.RFC3339Nano)})
	}
	cw.Flush()
	return 200, map[string]string{"csv": b.String()}
}

func sameDay(t, day time.Time) bool {
	y1, m1, d1 := t.UTC().Date()
	y2, m2, d2 := day.UTC().Date()
	return y1 == y2 && m1 == m2 && d1 == d2
}
