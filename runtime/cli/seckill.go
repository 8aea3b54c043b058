package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/risk"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill/token"
)

// Environment variables for secrets, so they need not appear on a command line.
const (
	envTokenKeys         = "FLASHSALE_TOKEN_KEYS"
	envTokenKeyFile      = "FLASHSALE_TOKEN_KEY_FILE"
	envPaymentSecret     = "FLASHSALE_PAYMENT_SECRET"
	envPaymentSecretFile = "FLASHSALE_PAYMENT_SECRET_FILE"
)

type tokenFlags struct{ keyFile string }

func (t *tokenFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.keyFile, "token-key-file", os.Getenv(envTokenKeyFile),
		"file with the token HMAC keys, one per line, current first (a mounted Secret; re-read when it changes); env "+envTokenKeys+" also works")
}

func (t *tokenFlags) signer(cmd *cobra.Command, ttl time.Duration, log interface{ Warn(string, ...any) }) (*token.Signer, error) {
	ring, generated, err := token.LoadKeyRing(t.keyFile, os.Getenv(envTokenKeys))
	if err != nil {
		return nil, err
	}
	if generated {
		log.Warn("!!! NO TOKEN KEY CONFIGURED: using a random development key. Tokens will not be accepted by other pods or after a restart. Set --token-key-file or " + envTokenKeys + " in production. !!!")
		fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: flashsale is using a generated development token key; set --token-key-file or "+envTokenKeys)
	}
	return token.NewSigner(ring, ttl, nil), nil
}

func newSeckillCommand() *cobra.Command {
	var (
		file         string
		listen       string
		logFormat    string
		poll         time.Duration
		autoPipeline bool
		debugAddr    string
		redis        redisconn.Options
		tok          tokenFlags
		dsn          string
		paySecret    string
	)
	cmd := &cobra.Command{
		Use:   "seckill --file sale.yaml --redis-addr HOST:PORT --listen :8080",
		Short: "Serve the purchase API of a sale",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(logFormat)
			fs, err := manifest.Load(file)
			if err != nil {
				return err
			}
			rdb, err := redis.Client(cmd.Context())
			if err != nil {
				return err
			}
			defer rdb.Close()
			signer, err := tok.signer(cmd, fs.TokenTTL(), log)
			if err != nil {
				return err
			}
			if tok.keyFile != "" {
				go token.WatchFile(cmd.Context(), tok.keyFile, token.DefaultWatchInterval, signer, func(err error) {
					log.Error("Token key file is unusable; keeping the previous keys", "file", tok.keyFile, "err", err)
				})
			}
			cfg := seckill.Config{Sale: fs, Redis: rdb, Signer: signer, PollInterval: poll, AutoPipeline: autoPipeline, Logger: log}
			if dsn != "" {
				db, err := orderdb.Open(dsn)
				if err != nil {
					return err
				}
				defer db.Close()
				pctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
				err = db.PingContext(pctx)
				cancel()
				if err != nil {
					return fmt.Errorf("connect to MySQL: %w", err)
				}
				cfg.Orders = orderdb.New(db)
			}
			if cfg.PaymentSecret, err = readPaymentSecret(paySecret); err != nil {
				return err
			}
			switch {
			case cfg.Orders == nil:
				log.Warn("No MySQL DSN: the pay endpoint answers 503 NOT_CONFIGURED", "hint", "set --mysql-dsn or "+envMySQLDSN)
			case len(cfg.PaymentSecret) == 0:
				log.Warn("No payment secret: the pay endpoint answers 503 NOT_CONFIGURED", "hint", "set --payment-secret-file or "+envPaymentSecret)
			}
			if r := fs.Spec.Risk; r != nil {
				cfg.Risk = risk.NewHTTPVerifier(r.VerifierURL, r.Timeout.Duration, r.FailOpen, nil)
			}
			srv, err := seckill.New(cfg)
			if err != nil {
				return err
			}
			if debugAddr != "" {
				go servePprof(debugAddr, log)
			}
			if err := srv.Start(cmd.Context()); err != nil {
				return err
			}
			if paySecret != "" {
				go watchPaymentSecret(cmd.Context(), paySecret, srv, log)
			}
			return srv.ListenAndServe(cmd.Context(), listen, func(a net.Addr) {
				log.Info("Serving the purchase API", "sale", fs.SaleKey(), "addr", a.String(),
					"start", fs.Spec.StartTime.UTC(), "end", fs.Spec.EndTime.UTC())
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	cmd.Flags().StringVar(&listen, "listen", ":8080", "address to serve on")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "text or json")
	cmd.Flags().DurationVar(&poll, "poll-interval", 250*time.Millisecond, "how often pause/close switches and stock are re-read from Redis")
	cmd.Flags().BoolVar(&autoPipeline, "redis-autopipeline", true, "coalesce concurrent purchases into pipelined Redis calls")
	cmd.Flags().StringVar(&debugAddr, "debug-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off by default")
	cmd.Flags().StringVar(&dsn, "mysql-dsn", os.Getenv(envMySQLDSN),
		"go-sql-driver DSN of the orders database, for the pay endpoint (without it payments answer 503); env "+envMySQLDSN)
	cmd.Flags().StringVar(&paySecret, "payment-secret-file", os.Getenv(envPaymentSecretFile),
		"file holding the shared secret the payment service sends as \"Authorization: Bearer <secret>\" (a mounted Secret; re-read when it changes); env "+envPaymentSecret+" also works")
	redis.Bind(cmd.Flags())
	tok.bind(cmd)
	return cmd
}

// readPaymentSecret reads the payment secret from file, else from the environment.
func readPaymentSecret(file string) ([]byte, error) {
	if file == "" {
		return []byte(strings.TrimSpace(os.Getenv(envPaymentSecret))), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read payment secret: %w", err)
	}
	return bytes.TrimSpace(b), nil
}

// watchPaymentSecret re-reads the secret file (a rotated Secret) every few
// seconds; an unreadable or empty file keeps the previous secret.
func watchPaymentSecret(ctx context.Context, file string, srv *seckill.Server, log interface{ Error(string, ...any) }) {
	last, _ := os.ReadFile(file)
	t := time.NewTicker(token.DefaultWatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(file)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			log.Error("Payment secret file is unusable; keeping the previous secret", "file", file, "err", err)
			continue
		}
		if !bytes.Equal(b, last) {
			srv.SetPaymentSecret(bytes.TrimSpace(b))
			last = b
		}
	}
}
