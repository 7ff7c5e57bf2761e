// Command host is a small SPARC-like service that embeds the webhook
// library: it serves the library's management API (POST /webhooks, ...)
// beside its own routes (POST /jobs, POST /scores, GET /healthz), runs
// batch jobs and delivers their webhooks durably from SQLite, or from
// PostgreSQL when several replicas share the work.
//
//	go run ./examples/host -allow-private
//
// Several replicas side by side, on one PostgreSQL database: each serves
// the same webhooks, and their deliveries are shared out among them.
//
//	go run ./examples/host -allow-private -addr 127.0.0.1:8080 -db postgres://user@127.0.0.1:5432/sparc
//	go run ./examples/host -allow-private -addr 127.0.0.1:8081 -db postgres://user@127.0.0.1:5432/sparc
//
// Flags:
//
//	-addr           address to listen on (default 127.0.0.1:8080)
//	-db             SQLite database file, or a postgres:// URL
//	                (default ./sparc-webhooks.db)
//	-allow-private  let deliveries reach loopback and private addresses,
//	                for local development
//	-token          require "Authorization: Bearer <token>" on every route
//	                but /healthz (default $SPARC_API_TOKEN)
//
// Try it with the receiver:
//
//	go run ./examples/host -allow-private
//	curl -s localhost:8080/webhooks -H 'Content-Type: application/json' \
//	    -d '{"url":"http://127.0.0.1:9000/hook","events":["*"]}'
//	go run ./examples/receiver -secret whsec_...   # the secret printed above
//	curl -s localhost:8080/jobs -H 'Content-Type: application/json' -d '{"name":"nightly","items":30}'
//
// SIGINT or SIGTERM shuts it down gracefully: it stops accepting requests,
// interrupts the running jobs (each publishes job.failed), lets the
// deliveries in flight finish for a few seconds and closes the database.
// Deliveries still pending are sent after the next start.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sparc-webhooks/webhook"
	"github.com/sparc-webhooks/webhook/examples/internal/sparc"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL, for -db postgres://...
)

// privateNetworks are the ranges -allow-private opens to deliveries:
// loopback and the private ranges of RFC 1918 and RFC 4193.
var privateNetworks = []string{
	"127.0.0.0/8", "::1/128",
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
	"fc00::/7",
}

// shutdownTimeout bounds each step of a graceful shutdown.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "host:", err)
		}
		os.Exit(2)
	}
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	dbPath := fs.String("db", "./sparc-webhooks.db", "SQLite database file, or a postgres:// URL")
	allowPrivate := fs.Bool("allow-private", false, "let deliveries reach loopback and private addresses (local development only)")
	token := fs.String("token", os.Getenv("SPARC_API_TOKEN"), "bearer token required on every route but /healthz (default $SPARC_API_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := webhook.Config{Logger: log}
	if *allowPrivate {
		cfg.AllowNetworks = privateNetworks
		log.Warn("deliveries may reach loopback and private addresses: use -allow-private for local development only",
			"networks", strings.Join(privateNetworks, ","))
	}
	db := redactDB(*dbPath) // a URL's password never reaches the logs
	d, err := webhook.Open(ctx, *dbPath, cfg)
	if err != nil {
		return fmt.Errorf("open %s: %w", db, err)
	}
	jobs := sparc.New(d, sparc.Config{Logger: log})

	mux := http.NewServeMux()
	jobs.Register(mux)
	mux.Handle("/", d.Handler()) // the management API: /webhooks, /deliveries, /event-types
	var h http.Handler = mux
	if *token != "" {
		h = requireToken(*token, h, "/healthz")
	} else {
		log.Warn("the management API is open to anyone who can reach it; set -token to require a bearer token")
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		jobs.Close()
		closeDispatcher(log, d)
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("host listening", "url", "http://"+ln.Addr().String(), "db", db, "auth", *token != "")

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err = <-serveErr:
		log.Error("server failed", "error", err)
	}

	// Stop taking requests, then stop the jobs (they publish their
	// outcome), then close the dispatcher, which lets the deliveries in
	// flight finish.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	if serr := srv.Shutdown(sctx); serr != nil {
		log.Warn("requests still in progress were cut off", "error", serr)
		srv.Close()
	}
	cancel()
	jobs.Close()
	closeDispatcher(log, d)
	log.Info("stopped")
	return err
}

// closeDispatcher closes d, giving the deliveries in flight
// shutdownTimeout to finish.
func closeDispatcher(log *slog.Logger, d *webhook.Dispatcher) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		log.Warn("deliveries in flight were interrupted; they are sent again after the next start", "error", err)
	}
}

// requireToken answers 401 to requests without "Authorization: Bearer
// token", except on the paths listed in open. This is where a real host
// would plug in its own authentication and authorization.
func requireToken(token string, next http.Handler, open ...string) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range open {
			if r.URL.Path == p {
				next.ServeHTTP(w, r)
				return
			}
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Comparing hashes keeps the comparison constant-time whatever the
		// lengths.
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sparc"`)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"unauthorized","message":"send Authorization: Bearer <token>"}}`+"\n")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// redactDB returns the -db flag as it may be logged: a URL without its
// password.
func redactDB(db string) string {
	if !strings.Contains(db, "://") {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return u.Redacted()
}
