package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/mattn/go-sqlite3"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sparc-webhooks/webhook/internal/store"
	"github.com/sparc-webhooks/webhook/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, s *store.Store) *store.Store {
	s.Start()
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		s, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "s.db"), storetest.Config())
		require.NoError(t, err)
		return start(t, s)
	})
}

var schemas atomic.Int64

// TestPostgres runs the suite on PostgreSQL when WEBHOOK_TEST_POSTGRES_DSN
// names a database (.ci/run starts one); in CI it must.
func TestPostgres(t *testing.T) {
	dsn := os.Getenv("WEBHOOK_TEST_POSTGRES_DSN")
	if dsn == "" && os.Getenv("CI") != "" {
		t.Fatal("CI must run the store's suite on PostgreSQL: set WEBHOOK_TEST_POSTGRES_DSN")
	}
	if dsn == "" {
		t.Skip("the PostgreSQL run needs a database: set WEBHOOK_TEST_POSTGRES_DSN=postgres://user@127.0.0.1:5432/dbname (.ci/run starts one)")
	}
	storetest.Run(t, func(t *testing.T) *store.Store {
		schema := fmt.Sprintf("st%d_%d", os.Getpid(), schemas.Add(1))
		admin, err := sql.Open("pgx", dsn)
		require.NoError(t, err)
		_, err = admin.Exec("CREATE SCHEMA " + schema)
		require.NoError(t, err)
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		s, err := store.Open(t.Context(), u.String(), storetest.Config())
		require.NoError(t, err)
		t.Cleanup(func() {
			admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			admin.Close()
		})
		return start(t, s)
	})
}
