package webhook

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Hostile receivers: each test below plays one misbehaving endpoint on
// loopback and checks what the dispatcher records and that it stays
// bounded and responsive.

// rawServer is a loopback TCP listener that speaks no HTTP of its own:
// serve, run for every accepted connection, decides what the peer gets.
// A nil serve holds the connection open and never reads or writes.
type rawServer struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newRawServer(t testing.TB, serve func(net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &rawServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			if serve != nil {
				s.wg.Go(func() { serve(c) })
			}
		}
	})
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() + "/hook" }

// close stops accepting, closes every connection and waits for the
// goroutines serving them.
func (s *rawServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// readRequestHead reads an HTTP request up to the end of its headers, so
// that what follows is an answer to it.
func readRequestHead(c net.Conn) *bufio.Reader {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return br
		}
	}
}

// resetConn closes c with an RST instead of a FIN.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// oneAttempt is a retry policy without retries.
func oneAttempt() *ScheduleRetryPolicy { return &ScheduleRetryPolicy{} }

// attemptsOf waits until a webhook's only delivery has settled, checks
// that it settled in status, and returns it with its attempts.
func attemptsOf(t testing.TB, d *Dispatcher, webhookID string, status DeliveryStatus) (Delivery, []Attempt) {
	t.Helper()
	id := onlyDelivery(t, d, webhookID).ID
	var dl Delivery
	eventually(t, func() bool {
		var err error
		dl, err = d.Delivery(t.Context(), id)
		require.NoError(t, err)
		return dl.Status != StatusPending
	}, "delivery %d never settled (now %+v)", id, dl)
	attempts, err := d.Attempts(t.Context(), dl.ID)
	require.NoError(t, err)
	require.Equal(t, status, dl.Status, "delivery %+v, attempts %+v", dl, attempts)
	return dl, attempts
}

// requireNoAddress checks that an error text names neither the address nor
// the port of a receiver.
func requireNoAddress(t testing.TB, text, rawURL string) {
	t.Helper()
	host, port, err := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(rawURL, "http://"), "/hook"))
	require.NoError(t, err)
	require.NotContains(t, text, host, "an error text names the address")
	require.NotContains(t, text, port, "an error text names the port")
}

// A receiver that accepts the connection and then says nothing: the
// attempt times out with status 0, the worker is freed for other
// deliveries, and the delivery is retried on its schedule until it fails.
func TestFaultSilentReceiver(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1 // the healthy webhook needs the worker back
	cfg.AttemptTimeout = 300 * time.Millisecond
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{10 * time.Millisecond}}
	d := openTest(t, cfg)
	silent := newRawServer(t, nil)
	healthy := newReceiver(t, nil)
	hs := register(t, d, silent.url(), EventJobComplete)
	hh := register(t, d, healthy.url(), EventJobFailed)

	_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	eventually(t, func() bool { return silent.accepted.Load() >= 1 }, "the silent receiver was never reached")
	// The only worker is stuck on the silent receiver: this one waits for
	// the timeout to free it.
	_, err = d.Publish(t.Context(), Event{Type: EventJobFailed})
	require.NoError(t, err)
	healthy.waitFor(1)
	waitStatus(t, d, onlyDelivery(t, d, hh.ID).ID, StatusDelivered)

	dl, attempts := attemptsOf(t, d, hs.ID, StatusFailed)
	require.Equal(t, 2, dl.Attempts, "one attempt and one retry")
	require.Len(t, attempts, 2)
	for i, a := range attempts {
		require.Equal(t, i+1, a.Number)
		require.Equal(t, ClassTimeout, a.ErrorClass)
		require.Zero(t, a.StatusCode)
		require.Empty(t, a.ResponseBody)
		requireNoAddress(t, a.Error, silent.url())
	}
	require.Zero(t, dl.LastStatusCode)
	require.EqualValues(t, 2, silent.accepted.Load(), "each attempt connects afresh")
}

// A receiver that answers 200 and then trickles its body forever: the
// attempt still ends (at the attempt timeout at the latest), counts as
// delivered, and keeps at most MaxResponseBody bytes of the body.
func TestFaultTricklingBody(t *testing.T) {
	for _, maxBody := range []int{3, 100} {
		t.Run(fmt.Sprintf("MaxResponseBody=%d", maxBody), func(t *testing.T) {
			cfg := testConfig()
			cfg.AttemptTimeout = 500 * time.Millisecond
			cfg.MaxResponseBody = maxBody
			cfg.RetryPolicy = oneAttempt()
			d := openTest(t, cfg)
			var handlerDone atomic.Bool
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				defer handlerDone.Store(true)
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusOK)
				ctl := http.NewResponseController(w)
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for {
					if _, err := w.Write([]byte("x")); err != nil {
						return
					}
					if ctl.Flush() != nil {
						return
					}
					select {
					case <-r.Context().Done():
						return
					case <-tick.C:
					}
				}
			})
			w := register(t, d, rc.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			dl, attempts := attemptsOf(t, d, w.ID, StatusDelivered)
			require.Equal(t, 1, dl.Attempts)
			require.Len(t, attempts, 1)
			require.Equal(t, 200, attempts[0].StatusCode)
			require.Empty(t, attempts[0].ErrorClass)
			require.LessOrEqual(t, len(attempts[0].ResponseBody), maxBody, "the kept body is bounded")
			require.Equal(t, strings.Repeat("x", len(attempts[0].ResponseBody)), string(attempts[0].ResponseBody))
			eventually(t, handlerDone.Load, "the dispatcher never hung up on the trickling body")
		})
	}
}

// Connections reset by the receiver, before or after it read the request,
// are failed attempts of class "connection", retried on the schedule.
func TestFaultConnectionReset(t *testing.T) {
	tests := []struct {
		name  string
		serve func(net.Conn)
	}{
		{"reset on accept", func(c net.Conn) { resetConn(c) }},
		{"reset after the request", func(c net.Conn) {
			readRequestHead(c)
			resetConn(c)
		}},
		{"reset in the middle of the status line", func(c net.Conn) {
			readRequestHead(c)
			c.Write([]byte("HTTP/1.1 2"))
			resetConn(c)
		}},
		{"reset in the middle of the headers", func(c net.Conn) {
			readRequestHead(c)
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/pl"))
			resetConn(c)
		}},
	}
	cfg := testConfig()
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{10 * time.Millisecond}}
	d := openTest(t, cfg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, tt.serve)
			w := register(t, d, srv.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			dl, attempts := attemptsOf(t, d, w.ID, StatusFailed)
			require.Equal(t, 2, dl.Attempts, "the reset attempt was retried")
			require.Len(t, attempts, 2)
			for _, a := range attempts {
				require.Equal(t, ClassConnection, a.ErrorClass, a.Error)
				require.Zero(t, a.StatusCode)
				requireNoAddress(t, a.Error, srv.url())
			}
			require.NoError(t, d.Delete(t.Context(), w.ID))
		})
	}

	// The same through an HTTP server that hijacks the connection.
	t.Run("hijack and reset", func(t *testing.T) {
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				resetConn(conn)
			}
		})
		w := register(t, d, rc.url())
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
		dl, attempts := attemptsOf(t, d, w.ID, StatusFailed)
		require.Equal(t, 2, dl.Attempts)
		for _, a := range attempts {
			require.Equal(t, ClassConnection, a.ErrorClass, a.Error)
			require.Zero(t, a.StatusCode)
		}
		require.Len(t, rc.requests(), 2)
	})
}

// Server errors are retried; each failed attempt is of class "http" and
// keeps the status and the start of the body.
func TestFaultServerErrorsAreRetried(t *testing.T) {
	d := openTest(t, testConfig())
	for _, code := range []int{500, 502, 503, 504} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.WriteHeader(code)
					w.Write([]byte("down"))
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			w := register(t, d, rc.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			dl, attempts := attemptsOf(t, d, w.ID, StatusDelivered)
			require.Equal(t, 2, dl.Attempts)
			require.Len(t, attempts, 2)
			require.Equal(t, code, attempts[0].StatusCode)
			require.Equal(t, ClassHTTP, attempts[0].ErrorClass)
			require.Contains(t, attempts[0].Error, strconv.Itoa(code))
			require.Equal(t, "down", string(attempts[0].ResponseBody))
			require.Equal(t, 200, attempts[1].StatusCode)
			require.Empty(t, attempts[1].ErrorClass)
			require.Len(t, rc.requests(), 2)
		})
	}
}

// Retry-After on a 429 or 503 delays the next attempt beyond the schedule,
// up to MaxRetryAfter; values that are absent, unusable, shorter than the
// schedule or on other statuses leave the schedule alone. The delay is
// read from the stored next attempt, relative to the attempt's start.
func TestFaultRetryAfterDelay(t *testing.T) {
	const schedule = 20 * time.Second
	cfg := testConfig()
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{schedule}}
	cfg.MaxRetryAfter = 90 * time.Second
	d := openTest(t, cfg)
	date := func(d time.Duration) func() string {
		return func() string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	}
	fixed := func(v string) func() string { return func() string { return v } }
	tests := []struct {
		name   string
		status int
		header func() string // nil sends no Retry-After
		want   time.Duration
		slack  time.Duration // below want, for HTTP dates' whole seconds
	}{
		{"seconds on 429", 429, fixed("30"), 30 * time.Second, 0},
		{"seconds on 503", 503, fixed("45"), 45 * time.Second, 0},
		{"date on 429", 429, date(60 * time.Second), 60 * time.Second, 2 * time.Second},
		{"date on 503", 503, date(60 * time.Second), 60 * time.Second, 2 * time.Second},
		{"large seconds are capped", 429, fixed("999999999"), 90 * time.Second, 0},
		{"seconds beyond int64 are capped", 429, fixed("99999999999999999999"), 90 * time.Second, 0},
		{"far date is capped", 429, date(365 * 24 * time.Hour), 90 * time.Second, 0},
		{"shorter than the schedule", 429, fixed("5"), schedule, 0},
		{"zero", 429, fixed("0"), schedule, 0},
		{"date in the past", 503, date(-time.Hour), schedule, 0},
		{"negative", 429, fixed("-5"), schedule, 0},
		{"fraction", 429, fixed("1.5"), schedule, 0},
		{"garbage", 503, fixed("soon"), schedule, 0},
		{"absent", 429, nil, schedule, 0},
		{"ignored on 500", 500, fixed("30"), schedule, 0},
		{"ignored on 502", 502, fixed("30"), schedule, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				if tt.header != nil {
					w.Header().Set("Retry-After", tt.header())
				}
				w.WriteHeader(tt.status)
			})
			w := register(t, d, rc.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			id := onlyDelivery(t, d, w.ID).ID
			var attempts []Attempt
			eventually(t, func() bool {
				attempts, err = d.Attempts(t.Context(), id)
				require.NoError(t, err)
				return len(attempts) == 1
			}, "the attempt was not recorded")
			dl, err := d.Delivery(t.Context(), id)
			require.NoError(t, err)
			require.Equal(t, StatusPending, dl.Status)
			require.Equal(t, tt.status, dl.LastStatusCode)
			delay := dl.NextAttemptAt.Sub(attempts[0].StartedAt)
			// The next attempt is set after the answer came, so the delay
			// from the start may exceed want by the attempt's duration;
			// stored times have millisecond precision.
			require.GreaterOrEqual(t, delay, tt.want-tt.slack-time.Millisecond)
			require.LessOrEqual(t, delay, tt.want+2*time.Second)
			require.Len(t, rc.requests(), 1)
			require.NoError(t, d.Delete(t.Context(), w.ID))
		})
	}
}

// A 410 answer disables the webhook and cancels its other pending
// deliveries, which are never attempted.
func TestFaultGoneCancelsPending(t *testing.T) {
	cfg := testConfig()
	cfg.MaxInFlightPerWebhook = 1 // the others wait while the first is in flight
	d := openTest(t, cfg)
	entered := make(chan struct{})
	release := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			close(entered)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusGone)
	})
	w := register(t, d, rc.url())
	first, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
	require.NoError(t, err)
	<-entered
	for range 4 {
		_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
	}
	close(release)

	// Settled: none pending, and none still held by a worker that claimed
	// it before the webhook was disabled (the worker drops it, uncounted).
	eventually(t, func() bool { return unsettledCount(t, d) == 0 }, "deliveries still pending")
	page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, 5)
	for _, dl := range page.Deliveries {
		attempts, err := d.Attempts(t.Context(), dl.ID)
		require.NoError(t, err)
		if dl.EventID == first.EventID {
			require.Equal(t, StatusFailed, dl.Status)
			require.Equal(t, 410, dl.LastStatusCode)
			require.Len(t, attempts, 1)
			continue
		}
		require.Equal(t, StatusCancelled, dl.Status, "delivery %d of event %s", dl.ID, dl.EventID)
		require.Zero(t, dl.Attempts)
		require.Empty(t, attempts)
		require.Contains(t, dl.LastError, "disabled")
	}
	require.Len(t, rc.requests(), 1, "only the first delivery was attempted")
	hook, err := d.Get(t.Context(), w.ID)
	require.NoError(t, err)
	require.False(t, hook.Enabled)
}

// A redirect, to another loopback listener, is never followed: the target
// gets no connection at all, so neither the payload nor its signature
// reaches it.
func TestFaultRedirectNotFollowed(t *testing.T) {
	cfg := testConfig()
	cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: []time.Duration{10 * time.Millisecond}}
	d := openTest(t, cfg)
	target := newRawServer(t, func(c net.Conn) {
		readRequestHead(c)
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	})
	_, port, err := net.SplitHostPort(target.ln.Addr().String())
	require.NoError(t, err)
	locations := []string{
		target.url(),
		"http://localhost:" + port + "/hook",
		"//127.0.0.1:" + port + "/hook", // scheme-relative
	}
	for _, code := range []int{301, 302, 303, 307, 308} {
		for i, loc := range locations {
			t.Run(fmt.Sprintf("%d to %d", code, i), func(t *testing.T) {
				rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Location", loc)
					w.WriteHeader(code)
				})
				w := register(t, d, rc.url())
				_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
				require.NoError(t, err)
				dl, attempts := attemptsOf(t, d, w.ID, StatusFailed)
				require.Equal(t, 2, dl.Attempts, "a redirect is a failed attempt, retried")
				for _, a := range attempts {
					require.Equal(t, ClassRedirect, a.ErrorClass)
					require.Equal(t, code, a.StatusCode)
					require.NotContains(t, a.Error, port)
				}
				require.Len(t, rc.requests(), 2)
				require.Zero(t, target.accepted.Load(), "the redirect target was contacted")
				require.NoError(t, d.Delete(t.Context(), w.ID))
			})
		}
	}
	require.Zero(t, target.accepted.Load(), "the redirect target was contacted")
}

// gzipBomb returns a gzip stream of about 1 MiB that inflates to 1 GiB of
// zeros: 1024 copies of one member holding 1 MiB of zeros (a gzip stream
// may hold several members).
func gzipBomb(t testing.TB) []byte {
	t.Helper()
	var member bytes.Buffer
	zw, err := gzip.NewWriterLevel(&member, gzip.BestCompression)
	require.NoError(t, err)
	_, err = zw.Write(make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return bytes.Repeat(member.Bytes(), 1024)
}

// allocated reports the bytes allocated on the heap so far.
func allocated() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// Huge answers cost bounded memory: a 100 MiB body is read no further
// than MaxResponseBody plus a small drain, a gzip bomb is kept as sent
// (never inflated), and only MaxResponseBody bytes are kept.
func TestFaultHugeResponses(t *testing.T) {
	const hundredMiB = 100 << 20
	const memLimit = 32 << 20
	bomb := gzipBomb(t)
	chunk := bytes.Repeat([]byte("y"), 32<<10)
	var written atomic.Int64
	streamBody := func(w http.ResponseWriter) {
		for n := 0; n < hundredMiB; n += len(chunk) {
			m, err := w.Write(chunk)
			written.Add(int64(m))
			if err != nil {
				return
			}
		}
	}
	keptChunk := func(body []byte) { require.Equal(t, chunk[:len(body)], body) }
	tests := []struct {
		name   string
		answer func(n int, w http.ResponseWriter, r *http.Request)
		status DeliveryStatus
		kept   func(body []byte) // checks the kept body
	}{
		{"100 MiB with a length", func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(hundredMiB))
			w.WriteHeader(http.StatusOK)
			streamBody(w)
		}, StatusDelivered, keptChunk},
		{"100 MiB chunked", func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			streamBody(w)
		}, StatusDelivered, keptChunk},
		{"100 MiB error page", func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			streamBody(w)
		}, StatusFailed, keptChunk},
		{"gzip bomb", func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.Itoa(len(bomb)))
			w.WriteHeader(http.StatusOK)
			m, _ := w.Write(bomb)
			written.Add(int64(m))
		}, StatusDelivered, func(body []byte) {
			require.Equal(t, bomb[:len(body)], body, "the body is kept compressed, as sent")
		}},
	}
	for _, maxBody := range []int{0, 1000} { // 0: the default, 16 KiB
		cfg := testConfig()
		cfg.MaxResponseBody = maxBody
		cfg.RetryPolicy = oneAttempt()
		d := openTest(t, cfg)
		limit := cmpOr(maxBody, DefaultMaxResponseBody)
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/max=%d", tt.name, limit), func(t *testing.T) {
				rc := newReceiver(t, tt.answer)
				w := register(t, d, rc.url())
				written.Store(0)
				before := allocated()
				_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
				require.NoError(t, err)
				_, attempts := attemptsOf(t, d, w.ID, tt.status)
				grown := allocated() - before
				require.Less(t, grown, uint64(memLimit), "the attempt allocated %d MiB", grown>>20)
				require.Len(t, attempts, 1)
				body := attempts[0].ResponseBody
				require.Len(t, body, limit, "exactly MaxResponseBody bytes are kept")
				tt.kept(body)
				// Socket buffers take a few MiB; the rest was never read.
				require.Less(t, written.Load(), int64(hundredMiB/4), "the dispatcher read on after MaxResponseBody")
				got := rc.requests()
				require.Len(t, got, 1)
				require.Empty(t, got[0].Header.Get("Accept-Encoding"), "no compressed answer is asked for")
				require.NoError(t, d.Delete(t.Context(), w.ID))
			})
		}
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// After a body too long to drain, the connection is closed rather than
// reused; after a short one it is reused.
func TestFaultConnectionNotReusedAfterLongBody(t *testing.T) {
	cfg := testConfig()
	cfg.Workers = 1
	d := openTest(t, cfg)
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get(HeaderSPARCEvent) == EventJobFailed {
			w.WriteHeader(http.StatusOK)
			chunk := make([]byte, 32<<10)
			for range 100 << 5 { // 100 MiB
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			return
		}
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	w := register(t, d, srv.URL+"/hook")
	deliver := func(typ string) {
		t.Helper()
		pub, err := d.Publish(t.Context(), Event{Type: typ})
		require.NoError(t, err)
		eventually(t, func() bool {
			page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Status: StatusDelivered})
			require.NoError(t, err)
			return len(page.Deliveries) > 0 && page.Deliveries[0].EventID == pub.EventID
		}, "event %s not delivered", pub.EventID)
	}
	deliver(EventJobComplete)
	deliver(EventJobComplete)
	require.EqualValues(t, 1, conns.Load(), "a short answer leaves the connection for the next attempt")
	deliver(EventJobFailed) // 100 MiB
	deliver(EventJobComplete)
	require.EqualValues(t, 2, conns.Load(), "the connection of the long answer was not closed")
}

// A flood of response headers is cut off at the transport's limit: the
// attempt fails without an answer, and memory stays bounded.
func TestFaultHeaderFlood(t *testing.T) {
	const memLimit = 32 << 20
	endless := func(line string) func(net.Conn) {
		return func(c net.Conn) {
			readRequestHead(c)
			w := bufio.NewWriter(c)
			w.WriteString("HTTP/1.1 200 OK\r\n")
			for {
				if _, err := w.WriteString(line); err != nil {
					return
				}
			}
		}
	}
	tests := []struct {
		name  string
		serve func(net.Conn) // a raw receiver, or
		http  http.HandlerFunc
	}{
		{"10000 headers", nil, func(w http.ResponseWriter, _ *http.Request) {
			for i := range 10000 {
				w.Header().Set(fmt.Sprintf("X-Flood-%05d", i), "aaaaaaaaaaaaaaaa")
			}
			w.WriteHeader(http.StatusOK)
		}},
		{"endless headers", endless("X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"), nil},
		{"one endless header", endless("a"), nil},
		{"endless status line", func(c net.Conn) {
			readRequestHead(c)
			w := bufio.NewWriter(c)
			w.WriteString("HTTP/1.1 200 ")
			for {
				if _, err := w.WriteString("OK"); err != nil {
					return
				}
			}
		}, nil},
	}
	cfg := testConfig()
	cfg.RetryPolicy = oneAttempt()
	d := openTest(t, cfg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var u string
			if tt.serve != nil {
				u = newRawServer(t, tt.serve).url()
			} else {
				srv := httptest.NewServer(tt.http)
				t.Cleanup(srv.Close)
				u = srv.URL + "/hook"
			}
			w := register(t, d, u)
			before := allocated()
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			_, attempts := attemptsOf(t, d, w.ID, StatusFailed)
			grown := allocated() - before
			require.Less(t, grown, uint64(memLimit), "the attempt allocated %d MiB", grown>>20)
			require.Len(t, attempts, 1)
			require.Contains(t, []string{ClassConnection, ClassHTTP}, attempts[0].ErrorClass, attempts[0].Error)
			require.Zero(t, attempts[0].StatusCode)
			require.Empty(t, attempts[0].ResponseBody)
			require.NoError(t, d.Delete(t.Context(), w.ID))
		})
	}
}

// An endpoint that always refuses gets exactly len(Schedule)+1 attempts,
// then the delivery fails and nothing more is sent.
func TestFaultAlwaysForbidden(t *testing.T) {
	for _, retries := range []int{0, 1, 2, 5} {
		t.Run(fmt.Sprintf("%d retries", retries), func(t *testing.T) {
			cfg := testConfig()
			cfg.RetryPolicy = &ScheduleRetryPolicy{Schedule: make([]time.Duration, retries)}
			for i := range retries {
				cfg.RetryPolicy.(*ScheduleRetryPolicy).Schedule[i] = 5 * time.Millisecond
			}
			d := openTest(t, cfg)
			rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
			w := register(t, d, rc.url())
			_, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			dl, attempts := attemptsOf(t, d, w.ID, StatusFailed)
			require.Equal(t, retries+1, dl.Attempts)
			require.Len(t, attempts, retries+1)
			for i, a := range attempts {
				require.Equal(t, i+1, a.Number)
				require.Equal(t, 403, a.StatusCode)
				require.Equal(t, ClassHTTP, a.ErrorClass)
			}
			require.Equal(t, 403, dl.LastStatusCode)
			require.True(t, dl.NextAttemptAt.IsZero(), "a failed delivery has no next attempt")
			require.Len(t, rc.requests(), retries+1)
			hook, err := d.Get(t.Context(), w.ID)
			require.NoError(t, err)
			require.Equal(t, retries+1, hook.FailureStreak)
		})
	}
}

// An endpoint that recovers: its failure streak grows with each failed
// attempt, drops to 0 on a success and starts again from there.
func TestFaultRecoveringEndpoint(t *testing.T) {
	cfg := testConfig()
	cfg.RetryPolicy = oneAttempt()
	d := openTest(t, cfg)
	var healthy atomic.Bool
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		if healthy.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusBadGateway)
	})
	w := register(t, d, rc.url())
	send := func(want DeliveryStatus) Webhook {
		t.Helper()
		pub, err := d.Publish(t.Context(), Event{Type: EventJobComplete})
		require.NoError(t, err)
		eventually(t, func() bool {
			page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{Limit: 1})
			require.NoError(t, err)
			dl := page.Deliveries[0]
			require.Equal(t, pub.EventID, dl.EventID)
			return dl.Status == want
		}, "event %s did not become %s", pub.EventID, want)
		hook, err := d.Get(t.Context(), w.ID)
		require.NoError(t, err)
		return hook
	}
	for i := 1; i <= 3; i++ {
		hook := send(StatusFailed)
		require.Equal(t, i, hook.FailureStreak)
		require.True(t, hook.LastSuccessAt.IsZero())
		require.False(t, hook.LastFailureAt.IsZero())
	}
	healthy.Store(true)
	hook := send(StatusDelivered)
	require.Zero(t, hook.FailureStreak, "a success resets the streak")
	require.False(t, hook.LastSuccessAt.IsZero())
	require.True(t, hook.Enabled)
	healthy.Store(false)
	hook = send(StatusFailed)
	require.Equal(t, 1, hook.FailureStreak, "the streak starts again after a success")
}

// A destination that became blocked: a webhook registered to loopback by a
// dispatcher that allowed it, then attempted by one with the default
// Config. Every attempt is a failed attempt of class "blocked" that never
// connects, is retried, and whose error names no address or port.
func TestFaultBlockedDestination(t *testing.T) {
	srv := newRawServer(t, nil)
	_, port, err := net.SplitHostPort(srv.ln.Addr().String())
	require.NoError(t, err)
	for name, u := range map[string]string{"address": srv.url(), "name": "http://localhost:" + port + "/hook"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "blocked.db")
			d, err := Open(t.Context(), path, testConfig())
			require.NoError(t, err)
			w := register(t, d, u)
			require.NoError(t, d.Close(t.Context()))

			cfg := Config{ // the defaults, but quick retries and polls
				RetryPolicy:  &ScheduleRetryPolicy{Schedule: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond}},
				PollInterval: 50 * time.Millisecond,
			}
			d = openTestAt(t, path, cfg)
			_, err = d.Publish(t.Context(), Event{Type: EventJobComplete})
			require.NoError(t, err)
			dl, attempts := attemptsOf(t, d, w.ID, StatusFailed)
			require.Equal(t, 3, dl.Attempts, "blocked attempts are failed attempts, retried")
			require.Len(t, attempts, 3)
			for _, a := range attempts {
				require.Equal(t, ClassBlocked, a.ErrorClass)
				require.Zero(t, a.StatusCode)
				require.NotEmpty(t, a.Error)
				require.NotContains(t, a.Error, "127.0.0.1")
				require.NotContains(t, a.Error, "::1")
				require.NotContains(t, a.Error, "localhost")
				require.NotContains(t, a.Error, port)
			}
			require.NotContains(t, dl.LastError, port)
			require.NotContains(t, dl.LastError, "127.0.0.1")
			hook, err := d.Get(t.Context(), w.ID)
			require.NoError(t, err)
			require.Equal(t, 3, hook.FailureStreak)
			require.Zero(t, srv.accepted.Load(), "the blocked destination was connected to")
		})
	}
}
