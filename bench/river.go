package main

// The river mode: the same job built on github.com/riverqueue/river with
// its SQLite driver, as a careful user would build it. One job per
// delivery (event × webhook) carries the webhook's index, the event ID and
// the payload. The schema comes from River's own migrations (rivermigrate).
// Enqueueing uses InsertManyFastTx, 1,000 jobs per transaction. Draining
// starts a client with one queue of `workers` workers; its worker signs
// and POSTs, and River records the completion.
//
// The database is WAL with synchronous=FULL, a busy timeout and BEGIN
// IMMEDIATE, limited to one open connection as the riversqlite package
// documentation recommends (River runs internal operations in parallel,
// which otherwise end in SQLITE_BUSY). The SQLite driver has no
// LISTEN/NOTIFY, so the client fetches on FetchCooldown/FetchPollInterval,
// tuned for a backlog: a fetch at most every 5 ms while work keeps coming,
// and a poll every 50 ms otherwise.

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// deliverArgs is the River job of one delivery.
type deliverArgs deliveryMsg

// Kind implements river.JobArgs.
func (deliverArgs) Kind() string { return "deliver" }

// deliverWorker signs and POSTs one delivery; an error makes River retry.
type deliverWorker struct {
	river.WorkerDefaults[deliverArgs]
	send func(ctx context.Context, a deliverArgs, jobID int64) error
}

func (w *deliverWorker) Work(ctx context.Context, job *river.Job[deliverArgs]) error {
	return w.send(ctx, job.Args, job.ID)
}

// riverFetchCooldown and riverFetchPollInterval are the client's fetch
// settings (River's defaults: 100 ms and 1 s).
const (
	riverFetchCooldown     = 5 * time.Millisecond
	riverFetchPollInterval = 50 * time.Millisecond
)

// runRiver enqueues events × len(hooks) jobs in a fresh database and
// returns how long a client with `workers` workers took to complete them
// all.
func runRiver(ctx context.Context, rc *receiver, hooks []hook, events, workers int) (time.Duration, error) {
	path, cleanup, err := tempDB("river.db")
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
	driver := riversqlite.New(db)

	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return 0, fmt.Errorf("river: migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, fmt.Errorf("river: migrate: %w", err)
	}

	client := newTunedClient(workers, 15*time.Second)
	defer client.CloseIdleConnections()
	workersBundle := river.NewWorkers()
	river.AddWorker(workersBundle, &deliverWorker{send: func(ctx context.Context, a deliverArgs, jobID int64) error {
		return post(ctx, client, hooks[a.Hook], a.EventID, strconv.FormatInt(jobID, 10), a.Payload)
	}})
	// River logs at info level by default; keep its errors only.
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	// Enqueue with an insert-only client (no queues), event-major,
	// 1,000 jobs per transaction.
	inserter, err := river.NewClient(driver, &river.Config{Workers: workersBundle, Logger: logger})
	if err != nil {
		return 0, fmt.Errorf("river: insert client: %w", err)
	}
	total := events * len(hooks)
	const batch = 1000
	params := make([]river.InsertManyParams, 0, batch)
	for start := 0; start < total; start += batch {
		params = params[:0]
		for k := start; k < min(start+batch, total); k++ {
			ev, h := k/len(hooks), k%len(hooks)
			params = append(params, river.InsertManyParams{Args: deliverArgs{Hook: h, EventID: eventID(ev), Payload: payload(ev)}})
		}
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			_, err := inserter.InsertManyFastTx(ctx, tx, params)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("river: enqueue: %w", err)
		}
	}

	// Drain.
	if err := rc.reset(); err != nil {
		return 0, err
	}
	worker, err := river.NewClient(driver, &river.Config{
		Workers:           workersBundle,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		FetchCooldown:     riverFetchCooldown,
		FetchPollInterval: riverFetchPollInterval,
		JobTimeout:        15 * time.Second,
		Logger:            logger,
	})
	if err != nil {
		return 0, fmt.Errorf("river: client: %w", err)
	}
	start := time.Now()
	if err := worker.Start(ctx); err != nil {
		return 0, fmt.Errorf("river: start: %w", err)
	}
	elapsed, err := func() (time.Duration, error) {
		if _, err := rc.waitFor(ctx, int64(total), drainTimeout(int64(total))); err != nil {
			return 0, err
		}
		// The receiver has them all; wait until River has recorded every
		// completion, polling like the webhook mode polls Stats.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var left int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM river_job WHERE state <> 'completed'`).Scan(&left); err != nil {
				return 0, err
			}
			if left == 0 {
				return time.Since(start), nil
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-tick.C:
			}
		}
	}()
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := worker.Stop(stopCtx); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("river: %w", err)
	}
	if err := checkReceived(rc, int64(total)); err != nil {
		return 0, fmt.Errorf("river: %w", err)
	}
	return elapsed, nil
}
