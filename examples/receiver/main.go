// Command receiver is a webhook endpoint that verifies what it gets with
// the library's own functions and prints each event once.
//
//	go run ./examples/receiver -addr 127.0.0.1:9000 -secret whsec_...
//
// It checks both signatures that every delivery carries, the Standard
// Webhooks one (signature.Verify) and the SPARC one (signature.VerifySPARC),
// and answers 401 when either fails. A delivery whose webhook-id it has
// already printed, a retry after an answer that got lost, is answered 200
// and not printed again. Events go to stdout as "type id data"; rejections
// are logged to stderr.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sparc-webhooks/webhook/signature"
)

const (
	// maxBody is the largest body read; a larger one is answered 413.
	maxBody = 1 << 20
	// rememberIDs is how many event ids are kept to drop duplicates.
	rememberIDs = 10000
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "receiver:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("receiver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9000", "address to listen on")
	secret := fs.String("secret", os.Getenv("WEBHOOK_SECRET"), "the webhook's signing secret, whsec_... (default $WEBHOOK_SECRET)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *secret == "" {
		return errors.New("-secret is required: pass the secret that POST /webhooks returned")
	}
	if _, err := signature.ParseSecret(*secret); err != nil {
		return errors.New("-secret is not a webhook secret: it must be whsec_ followed by base64")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newReceiver(*secret, stdout, log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("receiver listening", "url", "http://"+ln.Addr().String()+"/")

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// receiver is the webhook endpoint.
type receiver struct {
	secret string
	log    *slog.Logger

	mu    sync.Mutex
	out   io.Writer
	seen  map[string]bool
	order []string // the ids in seen, oldest first
}

func newReceiver(secret string, out io.Writer, log *slog.Logger) *receiver {
	return &receiver{secret: secret, out: out, log: log, seen: make(map[string]bool)}
}

// envelope is the body of every delivery.
type envelope struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "body unreadable", http.StatusBadRequest)
		return
	}
	// Verify before anything else, so that a forged request cannot even
	// mark an id as seen.
	if err := signature.Verify(rc.secret, r.Header, body); err != nil {
		rc.log.Warn("rejected: Standard Webhooks signature", "error", err, "remote", r.RemoteAddr)
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	if err := signature.VerifySPARC(rc.secret, r.Header, body); err != nil {
		rc.log.Warn("rejected: SPARC signature", "error", err, "remote", r.RemoteAddr)
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	var ev envelope
	if err := json.Unmarshal(body, &ev); err != nil {
		rc.log.Warn("rejected: body is not an event", "error", err)
		http.Error(w, "body is not an event", http.StatusBadRequest)
		return
	}
	id := r.Header.Get(signature.HeaderWebhookID)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.seen[id] {
		rc.log.Info("duplicate dropped", "webhook_id", id)
		w.WriteHeader(http.StatusOK)
		return
	}
	rc.remember(id)
	fmt.Fprintf(rc.out, "%s  %-14s %s  %s\n", ev.Timestamp.Format(time.RFC3339), ev.Type, id, oneLine(ev.Data))
	w.WriteHeader(http.StatusOK)
}

// remember adds id to the ids seen, forgetting the oldest beyond
// rememberIDs.
func (rc *receiver) remember(id string) {
	rc.seen[id] = true
	rc.order = append(rc.order, id)
	if len(rc.order) > rememberIDs {
		delete(rc.seen, rc.order[0])
		rc.order = rc.order[1:]
	}
}

// oneLine returns JSON on one line.
func oneLine(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}
