// Command barehttp is the baseline of hack/bench.sh: the cheapest answer
// net/http can give. It answers every request, on any path and with any
// method, with the same fixed 410 JSON body the seckill API sends for a
// sold-out SKU, using plain net/http: no router, no JSON encoding per
// request, no body parsing (net/http drains the small request body itself).
//
// The server has the same timeouts as the seckill API's server so that the
// two differ only in what the handler does. It prints "listening on ADDR"
// once the socket is bound, so --listen 127.0.0.1:0 picks a free port.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// body is what the seckill API answers for a sold-out SKU.
var body = []byte(`{"error":"SOLD_OUT","message":"this SKU is sold out"}` + "\n")

var contentType = []string{"application/json"}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (port 0: pick a free one)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("barehttp: listen on %s: %v", *listen, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Content-Type"] = contentType
			w.WriteHeader(http.StatusGone)
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	_ = os.Stdout.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		stop()
		log.Fatalf("barehttp: %v", err) //nolint:gocritic // stop() ran just above
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
}
