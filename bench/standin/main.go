// Command standin is a fast stand-in for the TOP gateway, for the throughput benchmarks (Go, stdlib only).
//
// The project's own simulator (`bridge gateway-sim`, aiohttp) costs ~300 µs CPU per request on the
// benchmark machine, more than the bridge itself: against it, a 2-core box cannot show how fast the bridge
// is. This stand-in answers the same API (`alibaba.campus.mc.message.sendmessagetomobile`) for one app with
// the same checks, for a fraction of that CPU:
//
//   - POST|GET /router/rest: system parameters from the query string and the form body (the body wins on
//     repeats); method (21/22), app_key (28/29), v (32/33), format (23), timestamp (30/31, GMT+8, ±600 s),
//     sign (24/25: md5, hmac, hmac-sha256 over the sorted name+value pairs of query and body); then the
//     business parameter (40/41, and 15 isv.invalid-parameter for a bad msg_key, event_type, json_data or a
//     missing mobile_receiver); a success envelope (or the bare result with simplify=true).
//   - POST /router/batch: system parameters in the query, signed with the whole body appended; the body is
//     `#PUBLIC#method=…` and one url-encoded call per entry, joined by `\r\n-S-\r\n` (or the
//     `top-api-separator` header); one answer per call, in order, joined by the same separator; a batch
//     refused as a whole gets ONE error response.
//   - an app throttle (qps, sliding one-second window; a batch of N counts N; exceeding it bans the app for
//     ban_seconds with code 7), a latency knob (latency_ms + uniform 0..latency_jitter_ms) and drop_rate.
//   - the control API of the Python simulator, same JSON shapes: GET /_sim/stats, GET /_sim/messages
//     [?msg_key=K] (accepted msg_keys with the message as received, count, first/last received in epoch
//     seconds), GET|POST /_sim/faults (the knobs above only), POST /_sim/reset.
//
// Usage: standin --listen 127.0.0.1:PORT --app-key K --app-secret S [--latency-ms N] [--latency-jitter-ms N]
// [--qps N] [--ban-seconds S] [--drop-rate R] [--cpuprofile FILE]. It prints `listening http://HOST:PORT/router/rest`
// once ready.
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	method         = "alibaba.campus.mc.message.sendmessagetomobile"
	responseKey    = "alibaba_campus_mc_message_sendmessagetomobile_response"
	businessParam  = "mobile_receiver_message_event"
	timeMethod     = "taobao.time.get"
	apiVersion     = "2.0"
	maxSkewSeconds = 600.0
	separator      = "\r\n-S-\r\n"
	separatorHdr   = "top-api-separator"
	publicPrefix   = "#PUBLIC#"
	appLimitSub    = "accesscontrol.limited-by-app-access-count"
	invalidParam   = "isv.invalid-parameter"
	successExtInfo = `{"errormsg":"ok"}`
)

var gmt8 = time.FixedZone("GMT+8", 8*3600)

// messages: the gateway's wording of its top-level codes (bridge/gateway/protocol.py MESSAGES).
var messages = map[int]string{
	7: "App Call Limited", 10: "Service currently unavailable", 15: "Remote service error",
	21: "Missing method", 22: "Invalid method", 23: "Invalid format", 24: "Missing signature",
	25: "Invalid signature", 28: "Missing app key", 29: "Invalid app Key", 30: "Missing timestamp",
	31: "Invalid timestamp", 32: "Missing version", 33: "Invalid version", 40: "Missing required arguments",
	41: "Invalid arguments", 50: "Remote service error",
}

type refusal struct {
	code            int
	msg             string
	subCode, subMsg string
}

func refuse(code int, subCode, subMsg string) *refusal {
	return &refusal{code: code, msg: messages[code], subCode: subCode, subMsg: subMsg}
}

func invalid(reason string) *refusal {
	return &refusal{code: 15, msg: messages[15], subCode: invalidParam, subMsg: "非法参数:" + reason}
}

// knobs: what /_sim/faults shows and changes.
type knobs struct {
	LatencyMs       float64 `json:"latency_ms"`
	LatencyJitterMs float64 `json:"latency_jitter_ms"`
	QPS             int     `json:"qps"`
	BanSeconds      float64 `json:"ban_seconds"`
	DropRate        float64 `json:"drop_rate"`
}

type record struct {
	key         string
	message     []byte // the business parameter as received (compact JSON)
	count       int
	first, last float64
}

type stats struct {
	TotalRequests    int            `json:"total_requests"`
	Accepted         int            `json:"accepted"`
	Duplicates       int            `json:"duplicates"`
	Refusals         map[string]int `json:"refusals"`
	HTTPErrors       map[string]int `json:"http_errors"`
	Dropped          int            `json:"dropped"`
	Hung             int            `json:"hung"`
	BadBodies        int            `json:"bad_bodies"`
	BusinessFailures int            `json:"business_failures"`
	Batches          int            `json:"batches"`
	BatchMessages    int            `json:"batch_messages"`
	Bans             int            `json:"bans"`
	CallsDuringBan   int            `json:"calls_during_ban"`
}

type server struct {
	appKey    string
	secret    []byte
	initial   knobs
	mu        sync.Mutex // guards everything below
	knobs     knobs
	msgs      map[string]*record
	order     []*record
	st        stats
	window    []float64 // throttle: monotonic seconds of the calls admitted in the last second
	banUntil  float64
	seq       atomic.Uint64
	ridPrefix string
	started   time.Time
	tsText    atomic.Pointer[tsCache]
}

type tsCache struct {
	text  string
	epoch float64
}

func newServer(appKey, secret string, k knobs) *server {
	s := &server{appKey: appKey, secret: []byte(secret), initial: k, started: time.Now()}
	s.ridPrefix = strconv.FormatUint(uint64(rand.Uint32()&0xffffff), 16)
	s.resetLocked()
	return s
}

func (s *server) resetLocked() {
	s.knobs = s.initial
	s.msgs = make(map[string]*record, 1<<16)
	s.order = s.order[:0]
	s.st = stats{Refusals: map[string]int{}, HTTPErrors: map[string]int{}}
	s.window = s.window[:0]
	s.banUntil = 0
}

func (s *server) mono() float64 { return time.Since(s.started).Seconds() }

func (s *server) requestID() string {
	return s.ridPrefix + strconv.FormatUint(s.seq.Add(1), 16)
}

// ------------------------------------------------------------------------------------------ checks
func (s *server) timestamp(text string) (float64, error) {
	if c := s.tsText.Load(); c != nil && c.text == text {
		return c.epoch, nil
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05", text, gmt8)
	if err != nil {
		return 0, err
	}
	epoch := float64(t.Unix())
	s.tsText.Store(&tsCache{text, epoch})
	return epoch, nil
}

// canonical: sorted name+value pairs of every non-empty parameter but sign (the TOP signature input).
func canonical(params map[string]string, buf *bytes.Buffer) {
	names := make([]string, 0, len(params))
	for k, v := range params {
		if v != "" && k != "sign" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		buf.WriteString(k)
		buf.WriteString(params[k])
	}
}

func (s *server) signature(signMethod string, canon []byte) (string, bool) {
	var h hash.Hash
	switch signMethod {
	case "md5":
		h = md5.New()
		h.Write(s.secret)
		h.Write(canon)
		h.Write(s.secret)
	case "hmac":
		h = hmac.New(md5.New, s.secret)
		h.Write(canon)
	case "hmac-sha256":
		h = hmac.New(sha256.New, s.secret)
		h.Write(canon)
	default:
		return "", false
	}
	return strings.ToUpper(hex.EncodeToString(h.Sum(nil))), true
}

// checkApp: app_key, v, format, timestamp, sign over the parameters (+ body for a batch).
func (s *server) checkApp(params map[string]string, body string) *refusal {
	appKey := params["app_key"]
	if appKey == "" {
		return refuse(28, "", "")
	}
	if appKey != s.appKey {
		return refuse(29, "isv.appkey-not-exists", "")
	}
	v := params["v"]
	if v == "" {
		return refuse(32, "", "")
	}
	if v != apiVersion {
		return refuse(33, "", "only v=2.0 is supported")
	}
	if params["format"] != "json" {
		return refuse(23, "", "the simulated gateway answers format=json only")
	}
	ts := params["timestamp"]
	if ts == "" {
		return refuse(30, "", "")
	}
	epoch, err := s.timestamp(ts)
	if err != nil {
		return refuse(31, "", "timestamp must be yyyy-MM-dd HH:mm:ss in GMT+8")
	}
	skew := epoch - float64(time.Now().UnixNano())/1e9
	if math.Abs(skew) > maxSkewSeconds {
		return refuse(31, "", fmt.Sprintf("timestamp is %+.0f s off the gateway clock (GMT+8, ±600 s allowed)", skew))
	}
	given := params["sign"]
	if given == "" {
		return refuse(24, "", "")
	}
	signMethod := params["sign_method"]
	if signMethod == "" {
		signMethod = "md5"
	}
	var buf bytes.Buffer
	buf.Grow(512 + len(body))
	canonical(params, &buf)
	buf.WriteString(body)
	want, ok := s.signature(signMethod, buf.Bytes())
	if !ok {
		return refuse(25, "", "sign_method must be md5, hmac or hmac-sha256")
	}
	if !hmac.Equal([]byte(want), []byte(strings.ToUpper(given))) {
		return refuse(25, "", "")
	}
	return nil
}

func checkMethod(params map[string]string, allowTime bool) *refusal {
	m := params["method"]
	if m == "" {
		return refuse(21, "", "")
	}
	if m != method && !(allowTime && m == timeMethod) {
		return refuse(22, "", "")
	}
	return nil
}

// message: MobileReceiverMessageEvent; pointers tell absent/null from present.
type message struct {
	MsgKey          *string `json:"msg_key"`
	EventTimeMillis *int64  `json:"event_time_millis"`
	JSONData        *string `json:"json_data"`
	EventType       *string `json:"event_type"`
	Source          *string `json:"source"`
	Action          *string `json:"action"`
	ResourceID      *string `json:"resource_id"`
	ResourceURL     *string `json:"resource_url"`
	MobileReceiver  *string `json:"mobile_receiver"`
	CompanyID       *string `json:"company_id"`
	Sender          *string `json:"sender"`
	CorpID          *string `json:"corp_id"`
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// checkMessage validates the business parameter like bridge/gateway/simcheck.py check_message.
func checkMessage(raw string) (*message, *refusal) {
	if raw == "" {
		return nil, &refusal{code: 40, msg: messages[40] + ":" + businessParam}
	}
	var m message
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		why := "not a JSON object"
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return nil, &refusal{code: 41, msg: messages[41] + ":" + businessParam + "." + typeErr.Field, subMsg: "wrong JSON type"}
		}
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			why = "unknown field " + strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		}
		return nil, &refusal{code: 41, msg: messages[41] + ":" + businessParam, subMsg: why}
	}
	switch {
	case m.MsgKey == nil:
		return nil, &refusal{code: 40, msg: messages[40] + ":" + businessParam + ".msg_key"}
	case m.EventTimeMillis == nil:
		return nil, &refusal{code: 40, msg: messages[40] + ":" + businessParam + ".event_time_millis"}
	case m.EventType == nil:
		return nil, &refusal{code: 40, msg: messages[40] + ":" + businessParam + ".event_type"}
	}
	if *m.EventTimeMillis < 0 {
		return nil, &refusal{code: 41, msg: messages[41] + ":" + businessParam + ".event_time_millis",
			subMsg: "must be a non-negative integer (epoch milliseconds)"}
	}
	if !isUUID(*m.MsgKey) {
		return nil, invalid("msg_key must be UUID text (UUID.randomUUID().toString())")
	}
	switch *m.EventType {
	case "push_app", "mobile_receiver", "account_receiver":
	default:
		return nil, invalid("event_type must be push_app, mobile_receiver or account_receiver")
	}
	if m.JSONData != nil && !json.Valid([]byte(*m.JSONData)) {
		return nil, invalid("json_data must be standard JSON")
	}
	if *m.EventType == "mobile_receiver" && (m.MobileReceiver == nil || *m.MobileReceiver == "") {
		return nil, invalid("mobile_receiver is required for event_type mobile_receiver")
	}
	return &m, nil
}

// ------------------------------------------------------------------------------------------ state
// admit: the app throttle (None = pass, else whole seconds of ban left). Caller holds mu.
func (s *server) admitLocked(calls int) int {
	qps := s.knobs.QPS
	if qps <= 0 {
		return 0
	}
	now := s.mono()
	if now < s.banUntil {
		s.st.CallsDuringBan += calls
		return max(1, int(math.Ceil(s.banUntil-now)))
	}
	edge := now - 1.0
	i := 0
	for i < len(s.window) && s.window[i] <= edge {
		i++
	}
	s.window = s.window[i:]
	if len(s.window)+calls <= qps {
		for j := 0; j < calls; j++ {
			s.window = append(s.window, now)
		}
		return 0
	}
	s.st.Bans++
	s.banUntil = now + s.knobs.BanSeconds
	s.window = s.window[:0]
	return max(1, int(math.Ceil(s.knobs.BanSeconds)))
}

func (s *server) recordLocked(key string, raw string, now float64) {
	if r, ok := s.msgs[key]; ok {
		r.count++
		r.last = now
		s.st.Duplicates++
		return
	}
	r := &record{key: key, message: []byte(raw), count: 1, first: now, last: now}
	s.msgs[key] = r
	s.order = append(s.order, r)
	s.st.Accepted++
}

func epochNow() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// ------------------------------------------------------------------------------------------ answers
func appendJSONString(b []byte, s string) []byte {
	out, _ := json.Marshal(s)
	return append(b, out...)
}

func (s *server) errorBody(r *refusal) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"error_response":{"code":`...)
	b = strconv.AppendInt(b, int64(r.code), 10)
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, r.msg)
	if r.subCode != "" {
		b = append(b, `,"sub_code":`...)
		b = appendJSONString(b, r.subCode)
	}
	if r.subMsg != "" {
		b = append(b, `,"sub_msg":`...)
		b = appendJSONString(b, r.subMsg)
	}
	b = append(b, `,"request_id":"`...)
	b = append(b, s.requestID()...)
	return append(b, `"}}`...)
}

func successBody(requestID string, simplify bool) []byte {
	b := make([]byte, 0, 320)
	if !simplify {
		b = append(b, `{"`+responseKey+`":`...)
	}
	b = append(b, `{"result":{"content":true,"request_id":"`...)
	b = append(b, requestID...)
	b = append(b, `","error_code":"200","error_msg":"success","success":true,"error_level":"0","error_ext_info":`...)
	b = appendJSONString(b, successExtInfo)
	b = append(b, `},"request_id":"`...)
	b = append(b, requestID...)
	b = append(b, `"}`...)
	if !simplify {
		b = append(b, '}')
	}
	return b
}

func timeBody(requestID string, simplify bool) []byte {
	inner := `{"time":"` + time.Now().In(gmt8).Format("2006-01-02 15:04:05") + `","request_id":"` + requestID + `"}`
	if simplify {
		return []byte(inner)
	}
	return []byte(`{"time_get_response":` + inner + `}`)
}

func writeJSON(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	w.Write(body)
}

// ------------------------------------------------------------------------------------------ handlers
func first(values url.Values) map[string]string {
	out := make(map[string]string, len(values)+2)
	for k, v := range values {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}

// transportFault applies latency and drop_rate; true when the request was dropped (connection closed).
func (s *server) transportFault(w http.ResponseWriter) bool {
	s.mu.Lock()
	k := s.knobs
	s.mu.Unlock()
	if k.LatencyMs > 0 || k.LatencyJitterMs > 0 {
		ms := k.LatencyMs + rand.Float64()*k.LatencyJitterMs
		time.Sleep(time.Duration(ms * float64(time.Millisecond)))
	}
	if k.DropRate > 0 && rand.Float64() < k.DropRate {
		s.mu.Lock()
		s.st.Dropped++
		s.mu.Unlock()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	}
	return false
}

func (s *server) refused(w http.ResponseWriter, r *refusal) {
	s.mu.Lock()
	s.st.Refusals[strconv.Itoa(r.code)]++
	s.mu.Unlock()
	writeJSON(w, s.errorBody(r))
}

// begin reads a gateway request's body, counts it and applies the transport knobs; ok is false when the
// request was answered already (wrong method, dropped).
func (s *server) begin(w http.ResponseWriter, req *http.Request, allowGet bool) (raw []byte, ok bool) {
	if req.Method != http.MethodPost && !(allowGet && req.Method == http.MethodGet) {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return nil, false
	}
	raw, _ = io.ReadAll(req.Body)
	s.mu.Lock()
	s.st.TotalRequests++
	s.mu.Unlock()
	return raw, !s.transportFault(w)
}

func (s *server) banned(w http.ResponseWriter, calls int) bool {
	s.mu.Lock()
	ban := s.admitLocked(calls)
	s.mu.Unlock()
	if ban > 0 {
		s.refused(w, refuse(7, appLimitSub, fmt.Sprintf("This ban will last for %d more seconds", ban)))
	}
	return ban > 0
}

func (s *server) rest(w http.ResponseWriter, req *http.Request) {
	raw, ok := s.begin(w, req, true)
	if !ok {
		return
	}
	query, _ := url.ParseQuery(req.URL.RawQuery)
	params := first(query)
	ct := req.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if len(raw) > 0 && (ct == "application/x-www-form-urlencoded" || ct == "") {
		form, _ := url.ParseQuery(string(raw))
		for k, v := range form {
			if len(v) > 0 {
				params[k] = v[0]
			}
		}
	}
	if r := checkMethod(params, true); r != nil {
		s.refused(w, r)
		return
	}
	if r := s.checkApp(params, ""); r != nil {
		s.refused(w, r)
		return
	}
	if s.banned(w, 1) {
		return
	}
	simplify := params["simplify"] == "true"
	if params["method"] == timeMethod {
		writeJSON(w, timeBody(s.requestID(), simplify))
		return
	}
	event := params[businessParam]
	m, r := checkMessage(event)
	if r != nil {
		s.refused(w, r)
		return
	}
	now := epochNow()
	s.mu.Lock()
	s.recordLocked(*m.MsgKey, event, now)
	s.mu.Unlock()
	writeJSON(w, successBody(s.requestID(), simplify))
}

func (s *server) batch(w http.ResponseWriter, req *http.Request) {
	raw, ok := s.begin(w, req, false)
	if !ok {
		return
	}
	s.mu.Lock()
	s.st.Batches++
	s.mu.Unlock()
	sep := req.Header.Get(separatorHdr)
	if sep == "" {
		sep = separator
	}
	text := string(raw)
	query, _ := url.ParseQuery(req.URL.RawQuery)
	params := first(query)
	if r := s.checkApp(params, text); r != nil {
		s.refused(w, r)
		return
	}
	var parts []string
	if text != "" {
		parts = strings.Split(text, sep)
	}
	public := map[string]string{}
	if len(parts) > 0 && strings.HasPrefix(parts[0], publicPrefix) {
		q, _ := url.ParseQuery(parts[0][len(publicPrefix):])
		public = first(q)
		parts = parts[1:]
	}
	if len(parts) == 0 {
		s.refused(w, &refusal{code: 40, msg: messages[40] + ":batch calls"})
		return
	}
	s.mu.Lock()
	s.st.BatchMessages += len(parts)
	s.mu.Unlock()
	if s.banned(w, len(parts)) {
		return
	}
	simplify := params["simplify"] == "true"
	out := make([]byte, 0, len(parts)*300)
	for i, part := range parts {
		if i > 0 {
			out = append(out, sep...)
		}
		call := map[string]string{}
		if part != "N" {
			q, _ := url.ParseQuery(part)
			call = first(q)
		}
		for k, v := range public {
			if _, ok := call[k]; !ok {
				call[k] = v
			}
		}
		r := checkMethod(call, false)
		var m *message
		if r == nil {
			m, r = checkMessage(call[businessParam])
		}
		if r != nil {
			s.mu.Lock()
			s.st.Refusals[strconv.Itoa(r.code)]++
			s.mu.Unlock()
			out = append(out, s.errorBody(r)...)
			continue
		}
		now := epochNow()
		s.mu.Lock()
		s.recordLocked(*m.MsgKey, call[businessParam], now)
		s.mu.Unlock()
		out = append(out, successBody(s.requestID(), simplify)...)
	}
	w.Header()["Content-Type"] = []string{"text/plain"}
	w.Write(out)
}

// ------------------------------------------------------------------------------------------ control API
func (s *server) stats(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	body, _ := json.Marshal(s.st)
	s.mu.Unlock()
	writeJSON(w, body)
}

func (s *server) appendRecord(b []byte, r *record) []byte {
	b = append(b, `{"msg_key":`...)
	b = appendJSONString(b, r.key)
	b = append(b, `,"message":`...)
	b = append(b, r.message...)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(r.count), 10)
	b = append(b, `,"first_received":`...)
	b = strconv.AppendFloat(b, r.first, 'f', 6, 64)
	b = append(b, `,"last_received":`...)
	b = strconv.AppendFloat(b, r.last, 'f', 6, 64)
	return append(b, '}')
}

func (s *server) messages(w http.ResponseWriter, req *http.Request) {
	wanted := req.URL.Query().Get("msg_key")
	s.mu.Lock()
	b := make([]byte, 0, 64+len(s.order)*400)
	b = append(b, '[')
	if wanted != "" {
		if r, ok := s.msgs[wanted]; ok {
			b = s.appendRecord(b, r)
		}
	} else {
		for i, r := range s.order {
			if i > 0 {
				b = append(b, ',')
			}
			b = s.appendRecord(b, r)
		}
	}
	s.mu.Unlock()
	writeJSON(w, append(b, ']'))
}

func (s *server) faults(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodPost {
		raw, _ := io.ReadAll(req.Body)
		var changes map[string]json.RawMessage
		if err := json.Unmarshal(raw, &changes); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			writeJSON(w, []byte(`{"error":"expected a JSON object of fault knobs"}`))
			return
		}
		s.mu.Lock()
		k := s.knobs
		merged, _ := json.Marshal(k)
		var all map[string]json.RawMessage
		json.Unmarshal(merged, &all)
		for name, v := range changes {
			if _, ok := all[name]; !ok {
				s.mu.Unlock()
				w.WriteHeader(http.StatusBadRequest)
				msg, _ := json.Marshal(map[string]string{"error": "unknown fault knob " + strconv.Quote(name) +
					" (the stand-in knows latency_ms, latency_jitter_ms, qps, ban_seconds, drop_rate)"})
				writeJSON(w, msg)
				return
			}
			all[name] = v
		}
		merged, _ = json.Marshal(all)
		if err := json.Unmarshal(merged, &k); err != nil || k.QPS < 0 || k.LatencyMs < 0 || k.LatencyJitterMs < 0 ||
			k.BanSeconds < 0 || k.DropRate < 0 || k.DropRate > 1 {
			s.mu.Unlock()
			w.WriteHeader(http.StatusBadRequest)
			writeJSON(w, []byte(`{"error":"a knob has a wrong type or value"}`))
			return
		}
		s.knobs = k
		s.mu.Unlock()
	}
	s.mu.Lock()
	body, _ := json.Marshal(s.knobs)
	s.mu.Unlock()
	writeJSON(w, body)
}

func (s *server) reset(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	s.resetLocked()
	s.mu.Unlock()
	writeJSON(w, []byte(`{"ok":true}`))
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HOST:PORT")
	appKey := flag.String("app-key", "campus-demo", "the one app key accepted")
	secret := flag.String("app-secret", "local-simulator-secret", "its secret")
	var k knobs
	flag.Float64Var(&k.LatencyMs, "latency-ms", 0, "added latency per request, milliseconds")
	flag.Float64Var(&k.LatencyJitterMs, "latency-jitter-ms", 0, "plus uniform 0..N ms")
	flag.IntVar(&k.QPS, "qps", 0, "app calls per second before a ban (0 = unlimited; a batch of N counts N)")
	flag.Float64Var(&k.BanSeconds, "ban-seconds", 1, "ban length when qps is exceeded")
	flag.Float64Var(&k.DropRate, "drop-rate", 0, "probability that a request's connection is closed unanswered")
	cpuProfile := flag.String("cpuprofile", "", "write a Go CPU profile to this file until SIGINT/SIGTERM")
	flag.Parse()
	// The stand-in keeps every accepted message and allocates per request: collect less often (cheaper
	// per request; the heap stays far below the machine's memory in a benchmark run).
	debug.SetGCPercent(400)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			<-sigs
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(0)
		}()
	}

	s := newServer(*appKey, *secret, k)
	mux := http.NewServeMux()
	mux.HandleFunc("/router/rest", s.rest)
	mux.HandleFunc("/router/batch", s.batch)
	mux.HandleFunc("GET /_sim/stats", s.stats)
	mux.HandleFunc("GET /_sim/messages", s.messages)
	mux.HandleFunc("/_sim/faults", s.faults)
	mux.HandleFunc("/_sim/reset", s.reset)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen %s: %v", *listen, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.To4() == nil {
		host = "[" + host + "]"
	}
	fmt.Printf("listening http://%s:%d/router/rest\n", host, addr.Port)
	os.Stdout.Sync()
	srv := &http.Server{Handler: mux, IdleTimeout: 120 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	log.Fatal(srv.Serve(ln))
}
