package main

// The receiver: a loopback HTTP server in a process of its own, so that
// its CPU time and garbage never count against the sender being measured.
//
// The bench binary starts a copy of itself with -receiver. The copy listens
// on 127.0.0.1 on a free port, prints "ADDR host:port" on stdout and serves
// until its standard input closes (that is, until the parent exits, however
// it exits).
//
// Every POST is answered 204 after its body is read, and counted. A POST to
// a path that starts with /hang/ is never answered: the handler holds it
// until the client gives up (closes the connection), and counts it apart.
// Control endpoints, under /_/, let the parent reset the counters, read
// them, and wait for a count without polling over the network. After a
// reset with ?track=1 (the pg mode) the receiver also counts duplicates: a
// request for a webhook and Webhook-Id it had answered before.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// hangPrefix marks the paths whose requests the receiver never answers.
const hangPrefix = "/hang/"

// receiverCounts is what /_/count reports.
type receiverCounts struct {
	OK       int64 `json:"ok"`       // requests answered 204, hang paths excluded
	Hung     int64 `json:"hung"`     // requests to a hang path, held until the client left
	Unsigned int64 `json:"unsigned"` // answered requests that lacked a signature header
	Bytes    int64 `json:"bytes"`    // request body bytes read from answered requests
	// Duplicates counts answered requests whose webhook (path and query)
	// and Webhook-Id header the receiver had answered before since the last
	// reset. It is only counted after a reset with ?track=1 (the pg mode),
	// so that the other modes' receiver does no more than count.
	Duplicates int64 `json:"duplicates"`
}

// runReceiver is the body of the receiver process.
func runReceiver() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var ok, hung, unsigned, nbytes, dups atomic.Int64
	// With tracking on, seen holds every webhook and event ID answered
	// since the reset, to count duplicates.
	var (
		tracking atomic.Bool
		seenMu   sync.Mutex
		seen     map[string]struct{}
	)

	mux := http.NewServeMux()
	// /_/reset zeroes the counters; /_/reset?track=1 also starts counting
	// duplicates, which the next plain reset stops.
	mux.HandleFunc("/_/reset", func(w http.ResponseWriter, r *http.Request) {
		seenMu.Lock()
		seen = map[string]struct{}{}
		tracking.Store(r.URL.Query().Get("track") == "1")
		seenMu.Unlock()
		ok.Store(0)
		hung.Store(0)
		unsigned.Store(0)
		nbytes.Store(0)
		dups.Store(0)
		w.WriteHeader(http.StatusNoContent)
	})
	counts := func() receiverCounts {
		return receiverCounts{OK: ok.Load(), Hung: hung.Load(), Unsigned: unsigned.Load(), Bytes: nbytes.Load(), Duplicates: dups.Load()}
	}
	mux.HandleFunc("/_/count", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(counts())
	})
	// /_/wait?n=N&timeout=D answers once N requests were answered, or when
	// the timeout (a Go duration) passes, with the counts either way. It
	// checks a counter every millisecond, which costs nothing measurable.
	mux.HandleFunc("/_/wait", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		timeout, err := time.ParseDuration(r.URL.Query().Get("timeout"))
		if err != nil {
			timeout = time.Minute
		}
		deadline := time.Now().Add(timeout)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for ok.Load() < n && time.Now().Before(deadline) {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
		json.NewEncoder(w).Encode(counts())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, hangPrefix) {
			hung.Add(1)
			<-r.Context().Done() // the client gave up
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		nbytes.Add(n)
		if r.Header.Get("Webhook-Signature") == "" || r.Header.Get("X-Sparc-Signature") == "" {
			unsigned.Add(1)
		}
		if tracking.Load() {
			key := r.URL.RequestURI() + " " + r.Header.Get("Webhook-Id")
			seenMu.Lock()
			if _, dup := seen[key]; dup {
				dups.Add(1)
			} else {
				seen[key] = struct{}{}
			}
			seenMu.Unlock()
		}
		ok.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("ADDR %s\n", ln.Addr())
	go func() {
		// The parent holds our stdin; when it exits, stdin reaches EOF.
		io.Copy(io.Discard, os.Stdin)
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// receiver is the parent's handle on the receiver process.
type receiver struct {
	addr string // host:port
	cmd  *exec.Cmd
	ctl  *http.Client // for control requests only, never for measured traffic
	stop io.Closer    // closing it ends the receiver
}

// startReceiver starts the receiver process and waits for its address.
func startReceiver() (*receiver, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-receiver")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		stdin.Close()
		cmd.Wait()
		return nil, fmt.Errorf("receiver did not report its address (%q): %v", line, err)
	}
	return &receiver{
		addr: strings.TrimSpace(strings.TrimPrefix(line, "ADDR ")),
		cmd:  cmd,
		ctl:  &http.Client{Timeout: 15 * time.Minute},
		stop: stdin,
	}, nil
}

// url returns the receiver's URL for path (which starts with "/").
func (r *receiver) url(path string) string { return "http://" + r.addr + path }

// close ends the receiver process and waits for it.
func (r *receiver) close() {
	r.stop.Close()
	done := make(chan struct{})
	go func() { r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-done
	}
}

func (r *receiver) reset() error { return r.resetTo("/_/reset") }

// resetTracking resets the counters and has the receiver count duplicates
// until the next reset.
func (r *receiver) resetTracking() error { return r.resetTo("/_/reset?track=1") }

func (r *receiver) resetTo(path string) error {
	resp, err := r.ctl.Post(r.url(path), "", nil)
	if err != nil {
		return fmt.Errorf("reset receiver: %w", err)
	}
	resp.Body.Close()
	return nil
}

func (r *receiver) counts() (receiverCounts, error) {
	return r.getCounts(r.url("/_/count"), context.Background())
}

// waitFor blocks until the receiver has answered n requests (hang paths
// excluded) or until timeout, and returns the counts then.
func (r *receiver) waitFor(ctx context.Context, n int64, timeout time.Duration) (receiverCounts, error) {
	u := r.url(fmt.Sprintf("/_/wait?n=%d&timeout=%s", n, timeout))
	c, err := r.getCounts(u, ctx)
	if err == nil && c.OK < n {
		err = fmt.Errorf("receiver got %d of %d requests within %s", c.OK, n, timeout)
	}
	return c, err
}

func (r *receiver) getCounts(u string, ctx context.Context) (receiverCounts, error) {
	var c receiverCounts
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return c, err
	}
	resp, err := r.ctl.Do(req)
	if err != nil {
		return c, fmt.Errorf("ask receiver: %w", err)
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&c)
	return c, err
}
