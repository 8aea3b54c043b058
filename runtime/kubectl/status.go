package kubectl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// clearScreen moves the cursor home and clears the terminal, so each frame
// of --watch replaces the last one.
const clearScreen = "\033[H\033[2J"

func newStatusCommand(o *options) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status NAME [--watch]",
		Short: "Show a sale on one screen: phase, countdown, SKUs, queue lag, conditions, Events",
		Long: `Show a FlashSale on one screen: its phase and the countdown to its next
boundary (warm-up, start, end, the end of the payment window), each SKU's
stock, remaining, sold, paid and cancelled units, the queue lag, the
conditions and the sale's last Events.

--watch redraws the screen every second until Ctrl-C. When the output is not
a terminal, it prints a new frame (after a blank line) each time the sale or
its Events change, without escape codes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.client()
			if err != nil {
				return err
			}
			if !watch {
				_, err := frame(cmd.Context(), c, ns, args[0], cmd.OutOrStdout())
				return err
			}
			return watchStatus(cmd.Context(), c, ns, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw every second until Ctrl-C")
	return cmd
}

// frame renders the sale once and returns what identifies this state of it
// (the sale's and its latest Event's resourceVersions).
func frame(ctx context.Context, c client.Reader, ns, name string, w io.Writer) (string, error) {
	fs, err := getSale(ctx, c, ns, name)
	if err != nil {
		return "", err
	}
	events, err := saleEvents(ctx, c, fs)
	if err != nil {
		return "", err
	}
	version := fs.ResourceVersion
	if n := len(events); n > 0 {
		version += "/" + events[n-1].ResourceVersion
	}
	return version, renderStatus(w, fs, events, time.Now())
}

// watchStatus redraws the sale until ctx ends: on a terminal every second
// (the countdown moves), elsewhere once per change of the sale or its Events.
// A read that fails is reported and retried; a deleted sale ends the watch.
func watchStatus(ctx context.Context, c client.Reader, ns, name string, out, errOut io.Writer) error {
	tty := isTerminal(out)
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var buf bytes.Buffer
		version, err := frame(ctx, c, ns, name, &buf)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !saleExists(ctx, c, ns, name):
			return err
		case err != nil:
			fmt.Fprintf(errOut, "%s: %v (retrying)\n", time.Now().Format(time.TimeOnly), err)
		case tty:
			if _, err := io.WriteString(out, clearScreen+buf.String()); err != nil {
				return err
			}
		case version != last:
			sep := ""
			if last != "" {
				sep = "\n" // frames apart, for a reader of a log or a pipe
			}
			if _, err := io.WriteString(out, sep+buf.String()); err != nil {
				return err
			}
			last = version
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// saleExists is false only when the API server says the sale is gone.
func saleExists(ctx context.Context, c client.Reader, ns, name string) bool {
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha1.FlashSale{})
	return !apierrors.IsNotFound(err)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
