package testutil

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
)

// DefaultMySQLDSN is the server DSN used when FLASHSALE_TEST_MYSQL_DSN is unset.
const DefaultMySQLDSN = "root@tcp(127.0.0.1:3306)/"

// mysqlStartHint says how to start the MariaDB the tests expect.
const mysqlStartHint = `start it with:
    bash hack/services.sh        (starts Redis and MariaDB; bash .ci/run also does)
or by hand:
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
or point the tests elsewhere with FLASHSALE_TEST_MYSQL_DSN='user:pass@tcp(host:port)/'`

// MySQL creates a fresh database named "t_<random hex>" on the server of
// FLASHSALE_TEST_MYSQL_DSN (default "root@tcp(127.0.0.1:3306)/"; its database
// name, if any, is ignored), and returns an open *sql.DB on it together with its
// go-sql-driver DSN, which has parseTime=true and multiStatements=true.
//
// At cleanup the *sql.DB is closed and the database dropped. If the server does
// not answer within 5 s the test fails with a message that says how to start
// it; it is never skipped.
func MySQL(t testing.TB) (*sql.DB, string) {
	t.Helper()
	base := os.Getenv("FLASHSALE_TEST_MYSQL_DSN")
	if base == "" {
		base = DefaultMySQLDSN
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("testutil: FLASHSALE_TEST_MYSQL_DSN=%q is not a go-sql-driver DSN: %v", base, err)
	}
	cfg.DBName = ""
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}

	admin, err := openPing(cfg)
	if err != nil {
		t.Fatalf("testutil: MariaDB at %s is not reachable (%v); %s", cfg.Addr, err, mysqlStartHint)
	}
	name := "t_" + randomHex(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		_ = admin.Close()
		t.Fatalf("testutil: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		defer func() { _ = admin.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("testutil: dropping database %s: %v", name, err)
		}
	})

	cfg.DBName = name
	cfg.ParseTime = true
	cfg.MultiStatements = true
	dsn := cfg.FormatDSN()
	db, err := openPing(cfg)
	if err != nil {
		t.Fatalf("testutil: opening database %s: %v", name, err)
	}
	// Registered after the drop, so it runs first: connections of the test are
	// closed before the database goes.
	t.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

// openPing opens a *sql.DB for cfg and checks that the server answers.
func openPing(cfg *mysql.Config) (*sql.DB, error) {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// OrderDB is MySQL with the order schema: a fresh database, opened the way
// the data plane opens it (orderdb.Open) and migrated. It returns the pool
// and its DSN (for child processes); both go away at cleanup.
func OrderDB(t testing.TB) (*sql.DB, string) {
	t.Helper()
	_, dsn := MySQL(t)
	db, err := orderdb.Open(dsn)
	if err != nil {
		t.Fatalf("open the order database: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := orderdb.Migrate(context.Background(), db); err != nil {
		t.Fatalf("migrate the order database: %v", err)
	}
	return db, dsn
}

// ProxiedOrderDB opens the order database at dsn through a TCP proxy the test
// can cut (MySQL gone) and restore. ioTimeout bounds each read and write, so
// a cut is noticed within it.
func ProxiedOrderDB(t testing.TB, dsn string, ioTimeout time.Duration) (*Proxy, *sql.DB) {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := TCPProxy(t, cfg.Addr)
	cfg.Addr = proxy.Addr()
	cfg.Timeout = time.Second
	cfg.ReadTimeout = ioTimeout
	cfg.WriteTimeout = ioTimeout
	db, err := orderdb.Open(cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return proxy, db
}
