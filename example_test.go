package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/sparc-webhooks/webhook"
)

// A host opens the dispatcher, registers a receiver and publishes an event
// when a job completes; the receiver verifies the signature.
func Example() {
	dir, _ := os.MkdirTemp("", "webhook-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	d, err := webhook.Open(ctx, filepath.Join(dir, "webhooks.db"), webhook.Config{
		AllowNetworks: []string{"127.0.0.0/8"}, // the receiver below is on loopback
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close(ctx)

	var secret string
	got := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(secret, r.Header, body); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		got <- r.Header.Get("X-SPARC-Event")
	}))
	defer receiver.Close()

	w, err := d.Register(ctx, webhook.Registration{URL: receiver.URL, Events: []string{"job.*"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	secret = string(w.Secret) // shown once: give it to the receiver

	start := time.Now().Add(-time.Minute)
	if _, err := d.Publish(ctx, webhook.NewJobComplete(webhook.JobComplete{
		JobID: "job-1", Name: "nightly", StartedAt: start, FinishedAt: time.Now(),
	})); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("received", <-got, "with a valid signature")
	// Output: received job.complete with a valid signature
}

// A receiver checks the Standard Webhooks headers of a request.
func ExampleVerify() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"id":"evt_1","type":"job.complete","timestamp":"2026-11-29T10:00:00Z","data":{}}`)
	sig, _ := webhook.Sign(secret, "evt_1", time.Now(), body)

	h := http.Header{}
	h.Set("webhook-id", "evt_1")
	h.Set("webhook-timestamp", fmt.Sprint(time.Now().Unix()))
	h.Set("webhook-signature", sig)
	fmt.Println(webhook.Verify(secret, h, body))

	h.Set("webhook-timestamp", fmt.Sprint(time.Now().Add(-time.Hour).Unix()))
	fmt.Println(webhook.Verify(secret, h, body))
	// Output:
	// <nil>
	// webhook: timestamp too old
}

// ObserveScore announces a score only when it has moved enough since the
// last announcement.
func ExampleDispatcher_ObserveScore() {
	dir, _ := os.MkdirTemp("", "webhook-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	d, err := webhook.Open(ctx, filepath.Join(dir, "webhooks.db"), webhook.Config{ScoreThreshold: 5})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close(ctx)

	for _, score := range []float64{70, 72, 74, 76, 77} {
		obs, err := d.ObserveScore(ctx, "acme-corp", score)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%v: published=%v baseline=%v\n", score, obs.Published, obs.Baseline)
	}
	// Output:
	// 70: published=false baseline=true
	// 72: published=false baseline=false
	// 74: published=false baseline=false
	// 76: published=true baseline=false
	// 77: published=false baseline=false
}

// Replicas of a host share one PostgreSQL database: each opens it with the
// same URL and configuration, and together they act as one dispatcher.
// (This example is compiled, not run: it needs a server.)
func ExampleOpen_postgreSQL() {
	ctx := context.Background()
	d, err := webhook.Open(ctx, "postgres://sparc@db.internal:5432/sparc?search_path=webhooks", webhook.Config{
		SecretKey: []byte(os.Getenv("WEBHOOK_SECRET_KEY")), // the same in every replica
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close(ctx)
	// Publish from any replica; any replica delivers.
	if _, err := d.Publish(ctx, webhook.Event{Type: webhook.EventJobComplete, Data: map[string]any{"job_id": "job_1"}}); err != nil {
		fmt.Println(err)
	}
}

// A host that owns a pgx pool hands it to New and publishes inside its own
// transactions. (Compiled, not run: it needs a server.)
func ExampleNew_postgreSQL() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	d, err := webhook.New(ctx, db, webhook.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close(ctx)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'done' WHERE id = $1`, "job_1"); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := d.PublishTx(ctx, tx, webhook.Event{Type: webhook.EventJobComplete, Data: map[string]any{"job_id": "job_1"}}); err != nil {
		fmt.Println(err)
		return
	}
	if err := tx.Commit(); err != nil { // the commit wakes every replica's workers
		fmt.Println(err)
	}
}
