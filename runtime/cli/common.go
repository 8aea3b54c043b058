package cli

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
)

// Environment variables that stand in for flags, so secrets need not appear
// on a command line.
const (
	envMySQLDSN     = "FLASHSALE_MYSQL_DSN"
	envKafkaBrokers = "FLASHSALE_KAFKA_BROKERS"
)

// saleFlags are the flags of every command that works on one sale's orders:
// the manifest, Redis, the MySQL order database and the log format.
type saleFlags struct {
	file      string
	dsn       string
	logFormat string
	redis     redisconn.Options
}

func (f *saleFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	fl.StringVar(&f.dsn, "mysql-dsn", "", "go-sql-driver DSN of the orders database; env "+envMySQLDSN)
	fromEnv(fl, "mysql-dsn", envMySQLDSN)
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	f.redis.Bind(fl)
}

// saleEnv is what those commands open: the sale, Redis and MySQL.
type saleEnv struct {
	sale *v1alpha1.FlashSale
	rdb  redis.UniversalClient
	db   *sql.DB
	log  *slog.Logger
}

// open loads the manifest and connects, failing early with a clear error
// (a missing DSN, an unreachable Redis) rather than at the first order.
func (f *saleFlags) open(ctx context.Context) (*saleEnv, error) {
	fs, err := manifest.Load(f.file)
	if err != nil {
		return nil, err
	}
	if f.dsn == "" {
		return nil, fmt.Errorf("no MySQL DSN: set --mysql-dsn or %s", envMySQLDSN)
	}
	rdb, err := f.redis.Client(ctx)
	if err != nil {
		return nil, err
	}
	db, err := orderdb.Open(f.dsn)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return &saleEnv{sale: fs, rdb: rdb, db: db, log: newLogger(f.logFormat)}, nil
}

// openOrderDB opens the orders database at dsn and checks, within 5 seconds,
// that it answers.
func openOrderDB(ctx context.Context, dsn string) (*sql.DB, error) {
	db, err := orderdb.Open(dsn)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = db.PingContext(pctx)
	cancel()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to MySQL: %w", err)
	}
	return db, nil
}

func (e *saleEnv) Close() {
	_ = e.db.Close()
	_ = e.rdb.Close()
}

// envAnnotation marks a flag whose value, when not given on the command
// line, comes from an environment variable (see fromEnv).
const envAnnotation = "flashsale.dev/env"

// fromEnv makes env stand in for the flag name when it is not given. The
// env's value is applied after parsing (applyEnv) rather than as the flag's
// default: a default is printed by --help, and these variables hold a DSN
// with its password or the path of a Secret. The flag's usage names env.
func fromEnv(fl *pflag.FlagSet, name, env string) {
	if err := fl.SetAnnotation(name, envAnnotation, []string{env}); err != nil {
		panic(err) // a flag name misspelt in the code, not bad input
	}
}

// applyEnv sets every flag of cmd marked by fromEnv and not given on the
// command line to its environment variable, when that is set.
func applyEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		env := f.Annotations[envAnnotation]
		if err != nil || f.Changed || len(env) == 0 {
			return
		}
		if v, ok := os.LookupEnv(env[0]); ok && v != "" {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("env %s (for --%s): %w", env[0], f.Name, e)
			}
		}
	})
	return err
}

// redactDSN is dsn with its password replaced, for logs: which server and
// database a process uses is worth logging, its password never.
func redactDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return cfg.FormatDSN()
}

func nonEmpty(in []string) []string {
	out := in[:0:0]
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
