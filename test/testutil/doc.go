// Package testutil gives tests of flashsale-operator the real dependencies the
// project tests against: a local redis-server, a throw-away local Redis Cluster,
// a fresh MariaDB database, unique sale names and free ports.
//
// Every helper takes a testing.TB, registers its own cleanup with t.Cleanup and
// fails the test (never skips it) when a dependency is missing, with a message
// that says how to start it. Run `bash hack/services.sh` (or `bash .ci/run`, which
// calls it) once to start Redis and MariaDB locally.
//
// A typical data-plane test:
//
//	func TestPurchase(t *testing.T) {
//		rdb := testutil.Redis(t)
//		ns := testutil.UniqueName(t) // the sale's namespace: every key of the sale carries it
//		testutil.CleanupKeys(t, rdb, "*"+ns+"/*")
//		db, dsn := testutil.MySQL(t)
//		...
//	}
//
// Environment:
//
//	FLASHSALE_TEST_REDIS_ADDR  address of the standalone Redis (default 127.0.0.1:6379)
//	FLASHSALE_TEST_MYSQL_DSN   go-sql-driver DSN of a MariaDB/MySQL account allowed to
//	                           CREATE and DROP databases (default "root@tcp(127.0.0.1:3306)/")
package testutil
