package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
)

// dialect is what differs between SQLite and PostgreSQL. Statements are
// written once, with "?" placeholders, and q numbers them for PostgreSQL;
// the few that cannot be written once for both (JSON functions, casts,
// SKIP LOCKED, MAX/GREATEST) give both forms to pick.
//
// Several processes can share one PostgreSQL database: claims skip the
// rows another process has locked (FOR UPDATE SKIP LOCKED), a commit that
// made deliveries due wakes the workers of every process (LISTEN/NOTIFY),
// and a lease that ran out with its process is claimed by another.
type dialect struct {
	pg    bool
	pgSQL sync.Map // query -> its PostgreSQL form
	locks pgLocks  // PostgreSQL advisory lock keys
	shard int      // PostgreSQL: this process's shard of webhook_counters
}

// counterShards is how many rows each counter is spread over with
// PostgreSQL; a process picks one at random when it opens the database.
const counterShards = 32

// q returns query in the dialect: for PostgreSQL, with its placeholders
// numbered ($1, $2, ...) and "BEGIN IMMEDIATE" as "BEGIN".
func (d *dialect) q(query string) string {
	if !d.pg {
		return query
	}
	if v, ok := d.pgSQL.Load(query); ok {
		return v.(string)
	}
	out := pgTranslate(query)
	d.pgSQL.Store(query, out)
	return out
}

// pick chooses between the SQLite and the PostgreSQL form of a statement.
func (d *dialect) pick(sqlite, postgres string) string {
	if d.pg {
		return postgres
	}
	return sqlite
}

// pgTranslate numbers the placeholders of a query outside string
// literals.
func pgTranslate(query string) string {
	if query == "BEGIN IMMEDIATE" {
		return "BEGIN"
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	inString := false
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'':
			inString = !inString
			b.WriteByte(c)
		case c == '?' && !inString:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// pgLocks are the first keys of the PostgreSQL advisory locks the store
// takes (the second is a webhook's seq, or 0). Advisory locks belong to
// the whole database, so the keys are derived from the schema: two
// dispatchers in two schemas of one database never wait for each other.
type pgLocks struct {
	migrate   int32 // held while migrating
	claim     int32 // per webhook, while a claim takes its deliveries
	retention int32 // held by the process that prunes
	// channel is the LISTEN/NOTIFY channel on which a commit that made
	// deliveries due wakes the workers of every process. Channels too
	// belong to the whole database: its name is the schema's.
	channel string
}

func newPGLocks(schema string) pgLocks {
	key := func(kind string) int32 {
		h := fnv.New32a()
		h.Write([]byte("webhook/" + kind + "/" + schema))
		return int32(h.Sum32())
	}
	return pgLocks{migrate: key("migrate"), claim: key("claim"), retention: key("retention"),
		channel: fmt.Sprintf("webhook_deliveries_%08x", uint32(key("channel")))}
}

// The PostgreSQL driver is github.com/jackc/pgx/v5/stdlib, which the host
// links (a blank import, or stdlib.OpenDB): this package does not import
// it, so that a binary that uses only SQLite does not link pgx.
const (
	pgxDriverName = "pgx"
	pgxPackage    = "github.com/jackc/pgx/v5/stdlib"
)

// ErrNoPostgresDriver is returned for a postgres:// URL when the binary
// does not link the pgx driver.
var ErrNoPostgresDriver = errors.New(`webhook: PostgreSQL needs the pgx driver: add import _ "github.com/jackc/pgx/v5/stdlib" to the program`)

// ErrNoSQLiteDriver is returned when the binary does not have SQLite's
// driver, which needs cgo.
var ErrNoSQLiteDriver = errors.New("webhook: SQLite needs cgo: build with CGO_ENABLED=1 and a C compiler (github.com/mattn/go-sqlite3)")

func driverRegistered(name string) bool {
	for _, d := range sql.Drivers() {
		if d == name {
			return true
		}
	}
	return false
}

// IsPostgresDB reports whether db uses the pgx driver.
func IsPostgresDB(db *sql.DB) bool {
	t := reflect.TypeOf(db.Driver())
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && t.PkgPath() == pgxPackage
}

// openPostgres opens a pool on a PostgreSQL URL.
func openPostgres(ctx context.Context, url string, cfg Config) (*Store, error) {
	if !driverRegistered(pgxDriverName) {
		return nil, ErrNoPostgresDriver
	}
	db, err := sql.Open(pgxDriverName, url)
	if err != nil {
		return nil, errInvalidURL
	}
	db.SetMaxOpenConns(cfg.Workers/4 + 8)
	db.SetMaxIdleConns(cfg.Workers/4 + 8)
	s := &Store{cfg: cfg, rdb: db, wdb: db, own: true, d: dialect{pg: true}, path: url}
	if err := s.init(ctx); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

// errInvalidURL is returned for a postgres:// URL that pgx cannot read. It
// never repeats the URL, which may hold a password.
var errInvalidURL = errors.New("webhook: path is not a valid PostgreSQL URL")

// ErrInvalidURL reports whether err is Open's answer to an unreadable
// PostgreSQL URL.
func ErrInvalidURL(err error) bool { return errors.Is(err, errInvalidURL) }

// Listen wakes the delivery loop whenever another process (or this one)
// commits due deliveries, until ctx ends (PostgreSQL; with SQLite it
// returns at once). It holds one connection of the pool while it runs.
// Errors are logged and the listener reconnects.
func (s *Store) Listen(ctx context.Context, wake func()) {
	if !s.d.pg {
		return
	}
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("webhook: listening for PostgreSQL notifications failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, wake func()) error {
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "LISTEN "+s.d.locks.channel); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "UNLISTEN "+s.d.locks.channel)
	wake() // whatever was committed before we listened
	return conn.Raw(func(dc any) error {
		wait, err := notificationWaiter(dc)
		if err != nil {
			return err
		}
		for {
			if err := wait(ctx); err != nil {
				return fmt.Errorf("wait for notification: %w", err)
			}
			wake()
		}
	})
}

// notificationWaiter returns a function that waits for the next
// notification on a pgx connection: (*stdlib.Conn).Conn() returns the
// *pgx.Conn, whose WaitForNotification(ctx) blocks until one arrives. The
// calls go through reflect because this package does not import pgx (see
// pgxPackage); their signatures are pgx v5's.
func notificationWaiter(dc any) (func(context.Context) error, error) {
	get := reflect.ValueOf(dc).MethodByName("Conn")
	if !get.IsValid() || get.Type().NumIn() != 0 || get.Type().NumOut() != 1 {
		return nil, errors.New("not a pgx connection")
	}
	pc := get.Call(nil)[0]
	waitFn := pc.MethodByName("WaitForNotification")
	ctxType := reflect.TypeFor[context.Context]()
	errType := reflect.TypeFor[error]()
	if !waitFn.IsValid() || waitFn.Type().NumIn() != 1 || !ctxType.AssignableTo(waitFn.Type().In(0)) ||
		waitFn.Type().NumOut() != 2 || waitFn.Type().Out(1) != errType {
		return nil, errors.New("not a pgx v5 connection")
	}
	return func(ctx context.Context) error {
		out := waitFn.Call([]reflect.Value{reflect.ValueOf(ctx)})
		if err, _ := out[1].Interface().(error); err != nil {
			return err
		}
		return nil
	}, nil
}

// sqliteLinked reports, as an error that says what to do, that the SQLite
// driver is missing (a build without cgo).
func sqliteLinked() error {
	if !driverRegistered("sqlite3") {
		return ErrNoSQLiteDriver
	}
	return nil
}
