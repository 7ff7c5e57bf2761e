// Package webhook is an embedded webhook dispatcher: a host service
// registers the URLs of other systems, publishes events when its work is
// done, and every subscribed URL receives a signed JSON POST, durably and
// with retries. The state lives in SQLite, in a file of its own (Open) or
// beside the host's tables (New), or, for a host that runs as several
// replicas, in one PostgreSQL database that they share.
//
// # Getting started
//
//	d, err := webhook.Open(ctx, "webhooks.db", webhook.Config{Logger: logger})
//	if err != nil { ... }
//	defer d.Close(context.Background())
//
//	w, err := d.Register(ctx, webhook.Registration{
//		URL:    "https://example.com/hooks/sparc",
//		Events: []string{webhook.EventJobComplete, webhook.EventJobFailed},
//	})
//	// w.Secret is shown once: hand it to the receiver.
//
//	_, err = d.Publish(ctx, webhook.NewJobComplete(webhook.JobComplete{
//		JobID: "job-42", Name: "nightly", StartedAt: start, FinishedAt: time.Now(),
//	}))
//
// When Publish returns nil the event and one delivery for each subscribed
// webhook are on disk; workers started by Open deliver them in the
// background. Handler returns an http.Handler with the management API
// (register, list, test, inspect and retry deliveries) for a host to mount
// behind its own authentication.
//
// # Events
//
// Every delivery's body is the envelope of the Standard Webhooks
// specification:
//
//	{"id":"evt_...","type":"job.complete","timestamp":"2026-11-29T10:01:30Z","data":{...}}
//
// The built-in types are job.complete (data JobComplete), job.failed
// (JobFailed) and score.changed (ScoreChanged); a host declares its own in
// Config.EventTypes. A webhook subscribes to exact types, to "*", or to
// patterns such as "job.*" whose "*" matches one dot-separated segment.
// The event ID is the receiver's key for deduplication: it is the same in
// every retry, and publishing an ID that is already stored sends nothing
// again. The payload is encoded once, at Publish, and its bytes are what is
// signed and sent on every attempt.
//
// ObserveScore turns a stream of computed scores into score.changed events:
// it announces a subject's score only when it has moved by at least
// Config.ScoreThreshold (or Config.ScoreRelativeThreshold) since the last
// announcement.
//
// # Signatures
//
// Each attempt is signed afresh, with two schemes in parallel:
//
//	webhook-id: <event id>
//	webhook-timestamp: <unix seconds>
//	webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>", keyed with the base64-decoded secret>
//	X-SPARC-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>", keyed with the secret string>
//
// The first is the Standard Webhooks scheme, which any Standard Webhooks
// library verifies; the second is simple to check by hand. Receivers
// written in Go use Verify or VerifySPARC of the package
// github.com/sparc-webhooks/webhook/signature (standard library only;
// re-exported here), which reject timestamps more
// than five minutes away and compare in constant time. Requests also carry
// X-SPARC-Event (the type), X-SPARC-Delivery (the delivery ID) and a
// User-Agent naming this library.
//
// A secret is "whsec_" followed by the base64 of 24 to 64 random bytes;
// Register makes a 32-byte one when none is given. It is returned by
// Register and nowhere else, and the Secret type prints as
// "whsec_[REDACTED]" in logs, errors and %v output.
//
// # Formats
//
// Each webhook has a Format. FormatJSON, the default, sends the signed
// envelope. FormatSlack and FormatDiscord render each event as a message
// for people, within each service's limits, and still sign what they send.
// A "mailto:" URL (with Config.SMTP set) sends each event as an email.
// Config.Messages adds links and replaces messages with templates, which
// Open checks. A newer score.changed for a subject supersedes an older one
// still waiting for a webhook.
//
// # Delivery and retries
//
// A delivery is attempted at once. A 2xx answer delivers it. Any other
// answer, and any transport error, fails the attempt, and the delivery is
// tried again on Config.RetryPolicy's schedule: by default the Standard
// Webhooks example (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and
// 24 h after the failures, ten attempts in all) with ±20 % jitter. A
// Retry-After header on a 429 or 503 answer postpones the next attempt, up
// to Config.MaxRetryAfter. Redirects are not followed. A 410 Gone answer
// disables the webhook at once. A webhook with Config.DisableAfterFailures
// consecutive failed attempts (default 20) and no success for
// Config.DisableAfterPeriod (default 5 days) is disabled, and
// Config.OnDisable is told. A disabled or deleted webhook receives nothing
// further; its pending deliveries are cancelled.
//
// Every attempt is recorded (Attempts) with its trigger, time, duration,
// status code, error class and the start of the response body; every
// failed attempt is also logged at warn level through Config.Logger.
//
// # Safety
//
// Deliveries reach only public addresses unless Config.AllowNetworks opens
// a range: the check runs on the address dialled, after DNS, so DNS
// rebinding and numeric spellings of loopback are caught, and cloud
// metadata addresses stay blocked. Each webhook has at most
// Config.MaxInFlightPerWebhook attempts in flight, fewer while it
// struggles, and a circuit breaker that holds its deliveries after
// repeated timeouts, connection errors, 429s or 503s. RotateSecret changes
// a secret with a grace period during which both sign, and
// Config.SecretKey encrypts secrets at rest.
//
// # Durability
//
// Deliveries are at least once. A worker claims a delivery with a lease;
// if the process dies mid-attempt the delivery is claimed again when the
// lease runs out (Config.LeaseDuration), so a receiver may see an event
// twice and should deduplicate by its ID. Concurrent Publish calls share
// one transaction and one fsync (group commit), and each returns only
// after its own event is committed.
//
// With Config.Synchronous at its default, SyncFull, a committed event
// survives a power failure. SyncNormal is faster, and still safe against a
// crash of the process, but a power failure or operating system crash can
// lose the last commits.
//
// # Many processes: PostgreSQL
//
// Open with a postgres:// URL, or New with a *sql.DB of the pgx driver,
// keeps the state in PostgreSQL. The package does not import pgx, so that a
// SQLite-only program does not link it: a program that uses PostgreSQL
// links the driver with import _ "github.com/jackc/pgx/v5/stdlib". Every
// process that opens the same
// database sees the same webhooks and shares the deliveries: claims use
// SELECT ... FOR UPDATE SKIP LOCKED with leases, so no delivery is
// attempted by two processes at once, and a process that dies leaves its
// deliveries to the others when their leases end. A commit that makes
// deliveries due wakes the workers of every process (LISTEN/NOTIFY). The
// per-webhook cap, the circuit breaker and the auto-disable rule count
// every process's attempts, and retention runs in one process at a time.
//
// # Layout
//
// Every SQL statement lives in internal/store, one implementation that
// speaks SQLite and PostgreSQL; this package validates, converts its types
// (store.go) and runs the delivery loop (dispatch.go). Concurrent writes
// share one transaction (group commit) in which each caller's work has a
// savepoint of its own, so that a caller's error fails that caller alone.
//
// # Concurrency and lifecycle
//
// A Dispatcher is safe for simultaneous use by multiple goroutines. Open
// and New start its goroutines; Close stops all of them: it stops claiming
// work, lets attempts in flight finish until its context ends, cancels the
// rest without counting them as failures, and returns. Every method takes a
// context first and returns ErrClosed after Close. Importing the package
// starts nothing and it keeps no global state.
package webhook
