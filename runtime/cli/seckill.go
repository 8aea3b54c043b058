package cli

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/risk"
	"github.com/flashsale-dev/flashsale-operator/runtime/seckill"
	"github.com/flashsale-dev/flashsale-operator/runtime/token"
)

// Environment variables for secrets, so they need not appear on a command line.
const (
	envTokenKeys    = "FLASHSALE_TOKEN_KEYS"
	envTokenKeyFile = "FLASHSALE_TOKEN_KEY_FILE"
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
	redis.Bind(cmd.Flags())
	tok.bind(cmd)
	return cmd
}
