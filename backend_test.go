package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// The suite runs against SQLite, and against PostgreSQL too when
// WEBHOOK_TEST_POSTGRES_DSN names a database the tests may use (for
// example postgres://postgres@127.0.0.1:5432/webhook_test; .ci/run starts
// one). TestPostgres runs the whole suite again in a child process with
// WEBHOOK_TEST_BACKEND=postgres: every test that opens a dispatcher with
// testDB then gets a fresh PostgreSQL schema instead of a SQLite file.
const (
	postgresDSNEnv = "WEBHOOK_TEST_POSTGRES_DSN"
	backendEnv     = "WEBHOOK_TEST_BACKEND"
)

// onPostgres reports whether this test process runs the suite against
// PostgreSQL.
func onPostgres() bool { return os.Getenv(backendEnv) == "postgres" }

// skipOnPostgres skips a test of SQLite's own behaviour in the PostgreSQL
// run.
func skipOnPostgres(t testing.TB, why string) {
	t.Helper()
	if onPostgres() {
		t.Skip("SQLite only: " + why)
	}
}

var schemaSeq atomic.Int64

// testDB returns where a test's dispatcher keeps its data: a new SQLite
// file, or in the PostgreSQL run a new schema, dropped when the test ends.
func testDB(t testing.TB) string {
	t.Helper()
	if !onPostgres() {
		return filepath.Join(t.TempDir(), "webhooks.db")
	}
	dsn := os.Getenv(postgresDSNEnv)
	require.NotEmpty(t, dsn, "%s is required with %s=postgres", postgresDSNEnv, backendEnv)
	schema := fmt.Sprintf("t%d_%d", os.Getpid(), schemaSeq.Add(1))
	admin, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	_, err = admin.Exec("CREATE SCHEMA " + schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	})
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// TestPostgres runs the whole suite against PostgreSQL.
func TestPostgres(t *testing.T) {
	dsn := os.Getenv(postgresDSNEnv)
	if dsn == "" && os.Getenv("CI") != "" {
		t.Fatalf("CI must run the suite on PostgreSQL too: .ci/run starts a server and sets %s", postgresDSNEnv)
	}
	if dsn == "" {
		t.Skipf("the PostgreSQL run needs a database: set %s=postgres://user@127.0.0.1:5432/dbname (.ci/run starts one)", postgresDSNEnv)
	}
	if onPostgres() {
		t.Skip("already the PostgreSQL run")
	}
	args := []string{"-test.run=^Test", "-test.skip=^TestPostgres$", "-test.count=1", "-test.timeout=10m"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.CommandContext(context.Background(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), backendEnv+"=postgres")
	out, err := cmd.CombinedOutput()
	if err != nil || testing.Verbose() {
		t.Logf("PostgreSQL run:\n%s", tail(string(out), 200))
	}
	require.NoError(t, err, "the suite failed against PostgreSQL")
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
