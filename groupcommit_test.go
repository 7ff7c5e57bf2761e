package webhook

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// A caller's own error inside the group commit fails that caller alone:
// eight bad updates among 256 concurrent publishes (four of an unknown
// webhook, four whose URL is refused under the store's lock) fail with
// their own errors, every publish commits, and the batch is not split into
// one commit per op. Before the savepoints, the eight errors made the
// writer re-run every op alone: about 200 to 265 commits.
func TestGroupCommitIsolatesCallerErrors(t *testing.T) {
	cfg := testConfig()
	cfg.DisableDelivery = true
	d := openTest(t, cfg)
	rc := newReceiver(t, nil)
	w := register(t, d, rc.url(), EventJobComplete)
	ctx := t.Context()
	before := d.st.Commits()

	const publishers = 256
	var wg sync.WaitGroup
	start := make(chan struct{})
	pubErrs := make([]error, publishers)
	for i := range publishers {
		wg.Go(func() {
			<-start
			_, pubErrs[i] = d.Publish(ctx, Event{Type: EventJobComplete})
		})
	}
	badErrs := make([]error, 8)
	for i := range 8 {
		wg.Go(func() {
			<-start
			if i%2 == 0 {
				_, badErrs[i] = d.Update(ctx, "00000000-0000-7000-8000-000000000000", WebhookUpdate{Description: new("x")})
				return
			}
			// The URL alone is checked against the stored format, in the
			// store's transaction: the error comes from inside the op.
			_, badErrs[i] = d.Update(ctx, w.ID, WebhookUpdate{URL: new("http://203.0.113.7:notaport/")})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range pubErrs {
		require.NoError(t, err, "publish %d", i)
	}
	for i, err := range badErrs {
		if i%2 == 0 {
			require.ErrorIs(t, err, ErrNotFound)
		} else {
			require.ErrorIs(t, err, ErrInvalid)
		}
	}
	commits := d.st.Commits() - before
	t.Logf("%d publishes and 8 bad updates took %d commits", publishers, commits)
	require.Less(t, commits, int64(64), "the bad updates split the batches")
	page, err := d.Deliveries(ctx, w.ID, DeliveryQuery{Limit: 500})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, publishers, "every publish left its delivery")
	got, err := d.Get(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, w.URL, got.URL, "a refused update changed nothing")
}

// PublishTx supersedes a stale score.changed exactly as Publish does: the
// fan-out is one.
func TestPublishTxSupersedesLikePublish(t *testing.T) {
	skipOnPostgres(t, "the host's database here is a SQLite file")
	for _, viaTx := range []bool{false, true} {
		name := "Publish"
		if viaTx {
			name = "PublishTx"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "host.db")
			db, err := sql.Open("sqlite3", "file:"+path+"?_txlock=immediate&_busy_timeout=5000&_journal_mode=WAL")
			require.NoError(t, err)
			defer db.Close()
			cfg := testConfig()
			cfg.DisableDelivery = true // the first stays pending
			d, err := New(t.Context(), db, cfg)
			require.NoError(t, err)
			defer func() { require.NoError(t, d.Close(context.Background())) }()
			rc := newReceiver(t, nil)
			w := register(t, d, rc.url(), EventScoreChanged)
			publish := func(prev, cur float64) {
				ev := NewScoreChanged(ScoreChanged{Subject: "acme", Previous: prev, Current: cur})
				if !viaTx {
					_, err := d.Publish(t.Context(), ev)
					require.NoError(t, err)
					return
				}
				tx, err := db.BeginTx(t.Context(), nil)
				require.NoError(t, err)
				_, err = d.PublishTx(t.Context(), tx, ev)
				require.NoError(t, err)
				require.NoError(t, tx.Commit())
			}
			publish(10, 20)
			publish(20, 30)
			page, err := d.Deliveries(t.Context(), w.ID, DeliveryQuery{})
			require.NoError(t, err)
			require.Len(t, page.Deliveries, 2)
			require.Equal(t, StatusPending, page.Deliveries[0].Status, "the newer waits")
			require.Equal(t, StatusSuperseded, page.Deliveries[1].Status, "the older is superseded")
			st, err := d.Stats(t.Context())
			require.NoError(t, err)
			require.Equal(t, int64(1), st.Superseded)
		})
	}
}
