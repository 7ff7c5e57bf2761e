package main

// The goqite mode: the same job built on maragu.dev/goqite, as a careful
// user would build it. One message per delivery (event × webhook) holds
// the webhook's index, the event ID and the payload. Enqueueing sends the
// backlog in transactions of 1,000 messages (SendTx). Draining runs one
// goroutine per worker, each looping Receive, sign, POST, Delete, and
// polling every 10 ms when the queue is empty.
//
// The database is WAL with synchronous=FULL, a busy timeout and BEGIN
// IMMEDIATE, limited to one open connection as goqite's README does:
// SQLite has one writer at a time, and a second connection only waits on
// the lock (in the busy handler's millisecond sleeps) instead of queueing
// in database/sql's pool.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"maragu.dev/goqite"
)

// goqiteSchema is schema_sqlite.sql of maragu.dev/goqite v0.4.0 (MIT
// licence), which the module ships as a file for its users to run.
const goqiteSchema = `
create table goqite (
  id text primary key default ('m_' || lower(hex(randomblob(16)))),
  created text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  updated text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  queue text not null,
  body blob not null,
  timeout text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  received integer not null default 0,
  priority integer not null default 0
) strict;

create trigger goqite_updated_timestamp after update on goqite begin
  update goqite set updated = strftime('%Y-%m-%dT%H:%M:%fZ') where id = old.id;
end;

create index goqite_queue_priority_created_idx on goqite (queue, priority desc, created);
`

// deliveryMsg is what a goqite message or a River job carries: which
// webhook, which event, and the body to send.
type deliveryMsg struct {
	Hook    int             `json:"hook"`
	EventID string          `json:"event_id"`
	Payload json.RawMessage `json:"payload"`
}

// runGoqite enqueues events × len(hooks) messages in a fresh database and
// returns how long `workers` workers took to deliver and delete them all.
func runGoqite(ctx context.Context, rc *receiver, hooks []hook, events, workers int) (time.Duration, error) {
	path, cleanup, err := tempDB("goqite.db")
	if err != nil {
		return 0, err
	}
	defer cleanup()
	db, err := sql.Open("sqlite3", sqliteDSN(path))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	if _, err := db.ExecContext(ctx, goqiteSchema); err != nil {
		return 0, fmt.Errorf("goqite: schema: %w", err)
	}
	// Every delivery that fails is received again after Timeout; 15 s is
	// the library's attempt timeout, and nothing fails here.
	q := goqite.New(goqite.NewOpts{DB: db, Name: "deliveries", Timeout: 15 * time.Second, MaxReceive: 10})

	// Enqueue: event-major, 1,000 messages per transaction.
	total := events * len(hooks)
	const batch = 1000
	for start := 0; start < total; start += batch {
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			for k := start; k < min(start+batch, total); k++ {
				ev, h := k/len(hooks), k%len(hooks)
				body, err := json.Marshal(deliveryMsg{Hook: h, EventID: eventID(ev), Payload: payload(ev)})
				if err != nil {
					return err
				}
				if err := q.SendTx(ctx, tx, goqite.Message{Body: body}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("goqite: enqueue: %w", err)
		}
	}

	// Drain.
	if err := rc.reset(); err != nil {
		return 0, err
	}
	client := newTunedClient(workers, 15*time.Second)
	defer client.CloseIdleConnections()
	drainCtx, stop := context.WithCancel(ctx)
	defer stop()
	var done atomic.Int64
	var mu sync.Mutex // guards firstErr
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		stop()
	}
	timer := time.AfterFunc(drainTimeout(int64(total)), func() {
		fail(fmt.Errorf("drain did not finish within %s", drainTimeout(int64(total))))
	})
	defer timer.Stop()
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for drainCtx.Err() == nil {
				m, err := q.ReceiveAndWait(drainCtx, 10*time.Millisecond)
				if err != nil {
					if drainCtx.Err() == nil {
						fail(fmt.Errorf("receive: %w", err))
					}
					return
				}
				var dm deliveryMsg
				if err := json.Unmarshal(m.Body, &dm); err != nil {
					fail(err)
					return
				}
				if err := post(drainCtx, client, hooks[dm.Hook], dm.EventID, string(m.ID), dm.Payload); err != nil {
					// Left in the queue, it is received again after its
					// timeout; nothing should fail here, so stop.
					fail(fmt.Errorf("post: %w", err))
					return
				}
				if err := q.Delete(context.WithoutCancel(drainCtx), m.ID); err != nil {
					fail(fmt.Errorf("delete: %w", err))
					return
				}
				if done.Add(1) == int64(total) {
					stop() // every message is delivered and deleted
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	timer.Stop()
	mu.Lock()
	err = firstErr
	mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("goqite: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var left int
	if err := db.QueryRowContext(ctx, `select count(*) from goqite`).Scan(&left); err != nil || left != 0 {
		return 0, fmt.Errorf("goqite: %d messages left after the drain (%v)", left, err)
	}
	if err := checkReceived(rc, int64(total)); err != nil {
		return 0, fmt.Errorf("goqite: %w", err)
	}
	return elapsed, nil
}

// inTx runs f in a transaction and commits it, or rolls back on error.
func inTx(ctx context.Context, db *sql.DB, f func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
