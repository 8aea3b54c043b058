package cli

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
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
	cmd.Flags().StringVar(&t.keyFile, "token-key-file", "",
		"file with the token HMAC keys, one per line, current first (a mounted Secret; re-read when it changes); env "+envTokenKeyFile+"; env "+envTokenKeys+" (the keys themselves) also works")
	fromEnv(cmd.Flags(), "token-key-file", envTokenKeyFile)
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

// seckillFlags are the seckill command's flags.
type seckillFlags struct {
	file         string
	listen       string
	metricsAddr  string
	logFormat    string
	poll         time.Duration
	autoPipeline bool
	batch        bool
	debugAddr    string
	redis        redisconn.Options
	tok          tokenFlags
	dsn          string
	paySecret    string
	durability   durabilityFlags
	admitEvery   time.Duration
}

// durabilityFlags override the manifest's spec.redis.durability.
type durabilityFlags struct {
	replicas int
	aof      bool
	timeout  time.Duration
}

func (d *durabilityFlags) bind(f *pflag.FlagSet) {
	f.IntVar(&d.replicas, "wait-replicas", 0, "replicas that must acknowledge an admitted purchase (Redis WAIT) before its 202; default: the manifest's spec.redis.durability.replicas")
	f.BoolVar(&d.aof, "wait-aof", false, "wait for the primary's AOF fsync (Redis WAITAOF, 7.2+) before a 202; default: the manifest's spec.redis.durability.aof")
	f.DurationVar(&d.timeout, "wait-timeout", 0, "bound of that wait, 1ms to 2s; past it the buyer gets 202 with \"durable\": false (default: the manifest's spec.redis.durability.timeout, else 250ms)")
}

// resolve is the durability of fs with the flags given on the command line
// taking precedence.
func (d *durabilityFlags) resolve(f *pflag.FlagSet, fs *v1alpha1.FlashSale) (seckill.Durability, error) {
	out := seckill.DurabilityOf(fs)
	if f.Changed("wait-replicas") {
		if d.replicas < 0 {
			return out, fmt.Errorf("--wait-replicas must be 0 or more, not %d", d.replicas)
		}
		out.Replicas = d.replicas
	}
	if f.Changed("wait-aof") {
		out.AOF = d.aof
	}
	if f.Changed("wait-timeout") {
		if d.timeout < seckill.MinDurabilityTimeout || d.timeout > seckill.MaxDurabilityTimeout {
			return out, fmt.Errorf("--wait-timeout must be between %s and %s, not %s (a purchase gives up after 3s)",
				seckill.MinDurabilityTimeout, seckill.MaxDurabilityTimeout, d.timeout)
		}
		out.Timeout = d.timeout
	}
	if out.Enabled() && out.Timeout <= 0 {
		out.Timeout = v1alpha1.DefaultDurabilityTimeout
	}
	return out, nil
}

func newSeckillCommand() *cobra.Command {
	var sf seckillFlags
	cmd := &cobra.Command{
		Use:   "seckill --file sale.yaml --redis-addr HOST:PORT --listen :8080 --metrics-addr :9090",
		Short: "Serve the purchase API of a sale",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return sf.run(cmd) },
	}
	sf.bind(cmd)
	return cmd
}

func (sf *seckillFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&sf.file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	f.StringVar(&sf.listen, "listen", ":8080", "address of the buyers' API (and the sale's page)")
	f.StringVar(&sf.metricsAddr, "metrics-addr", ":9090",
		"address of /metrics, /healthz and /readyz, kept off the buyers' port; empty serves them on --listen (one port, for local runs)")
	f.StringVar(&sf.logFormat, "log-format", "text", "text or json")
	f.DurationVar(&sf.poll, "poll-interval", 250*time.Millisecond, "how often pause/close switches and stock are re-read from Redis")
	f.BoolVar(&sf.autoPipeline, "redis-autopipeline", true, "coalesce concurrent purchases into pipelined Redis calls")
	f.BoolVar(&sf.batch, "purchase-batch", true,
		"let one purchase script call admit every purchase of a SKU bucket queued meanwhile (about 40% less Redis CPU per purchase under load; a sale with spec.redis.durability batches its own way)")
	f.StringVar(&sf.debugAddr, "debug-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); off by default")
	f.StringVar(&sf.dsn, "mysql-dsn", "",
		"go-sql-driver DSN of the orders database, for the pay endpoint (without it payments answer 503); env "+envMySQLDSN)
	fromEnv(f, "mysql-dsn", envMySQLDSN)
	f.StringVar(&sf.paySecret, "payment-secret-file", "",
		"file holding the shared secret the payment service sends as \"Authorization: Bearer <secret>\" (a mounted Secret; re-read when it changes); env "+envPaymentSecretFile+"; env "+envPaymentSecret+" (the secret itself) also works")
	fromEnv(f, "payment-secret-file", envPaymentSecretFile)
	f.DurationVar(&sf.admitEvery, "admit-interval", seckill.DefaultAdmitInterval,
		"how often this pod admits buyers from a queued sale's waiting room (spec.queue); the rate is sale-wide whatever the pod count, this only sets how smooth admission is")
	sf.redis.Bind(f)
	sf.tok.bind(cmd)
	sf.durability.bind(f)
}

// run connects the sale's Redis, token keys, orders database and risk
// verifier into a seckill server and serves it until the command ends.
func (sf *seckillFlags) run(cmd *cobra.Command) error {
	if sf.admitEvery < time.Millisecond {
		return fmt.Errorf("--admit-interval must be at least 1ms, not %s", sf.admitEvery)
	}
	ctx := cmd.Context()
	log := newLogger(sf.logFormat)
	fs, err := manifest.Load(sf.file)
	if err != nil {
		return err
	}
	rdb, err := sf.redis.Client(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	signer, err := sf.tok.signer(cmd, fs.TokenTTL(), log)
	if err != nil {
		return err
	}
	if sf.tok.keyFile != "" {
		go token.WatchFile(ctx, sf.tok.keyFile, token.DefaultWatchInterval, signer, func(err error) {
			log.Error("Token key file is unusable; keeping the previous keys", "file", sf.tok.keyFile, "err", err)
		})
	}
	cfg := seckill.Config{Sale: fs, Redis: rdb, Signer: signer, PollInterval: sf.poll, AutoPipeline: sf.autoPipeline,
		Batch: sf.batch, Logger: log, AdmitInterval: sf.admitEvery}
	if cfg.Durability, err = sf.durability.resolve(cmd.Flags(), fs); err != nil {
		return err
	}
	if sf.dsn != "" {
		db, err := openOrderDB(ctx, sf.dsn)
		if err != nil {
			return err
		}
		defer db.Close()
		cfg.Orders = orderdb.New(db)
	}
	if cfg.PaymentSecret, err = readPaymentSecret(sf.paySecret); err != nil {
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
	return sf.serve(ctx, cfg, log)
}

// serve starts the server of cfg (and pprof with --debug-addr) and serves
// the purchase API on --listen, the metrics and probes on --metrics-addr,
// until ctx ends.
func (sf *seckillFlags) serve(ctx context.Context, cfg seckill.Config, log *slog.Logger) error {
	srv, err := seckill.New(cfg)
	if err != nil {
		return err
	}
	if sf.debugAddr != "" {
		go servePprof(sf.debugAddr, log)
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	if sf.paySecret != "" {
		go watchPaymentSecret(ctx, sf.paySecret, srv, log)
	}
	fs := cfg.Sale
	return srv.Serve(ctx, seckill.Listen{API: sf.listen, Metrics: sf.metricsAddr, Ready: func(api, metrics net.Addr) {
		metricsAt := api.String() // one port: --metrics-addr is empty
		if metrics != nil {
			metricsAt = metrics.String()
		}
		log.Info("Serving the purchase API", "sale", fs.SaleKey(), "addr", api.String(), "metricsAddr", metricsAt,
			"start", fs.Spec.StartTime.UTC(), "end", fs.Spec.EndTime.UTC(), "queued", fs.Spec.Queue != nil,
			"page", "/sales/"+fs.Namespace+"/"+fs.Name+"/")
	}})
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
