package kubectl

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// switchCmd is one of the sale's boolean switches (spec.paused, spec.closed)
// set to a value by a command.
type switchCmd struct {
	use, short, long string
	field            string // spec path, for the answer
	done             string // past tense, for the answer
	get              func(*v1alpha1.FlashSale) bool
	set              func(*v1alpha1.FlashSale, bool)
	to               bool
	note             string // said after a change
	// moot, when set, says why setting the switch would change nothing
	// ("" when it would): the sale is left unpatched.
	moot func(fs *v1alpha1.FlashSale, now time.Time) string
}

func newPauseCommand(o *options) *cobra.Command {
	return o.switchCommand(switchCmd{
		use: "pause NAME", short: "Pause a sale: purchases are answered 503 PAUSED (spec.paused: true)",
		field: "spec.paused", done: "paused", to: true,
		get: func(fs *v1alpha1.FlashSale) bool { return fs.Spec.Paused },
		set: func(fs *v1alpha1.FlashSale, v bool) { fs.Spec.Paused = v },
	})
}

func newResumeCommand(o *options) *cobra.Command {
	return o.switchCommand(switchCmd{
		use: "resume NAME", short: "Resume a paused sale (spec.paused: false)",
		field: "spec.paused", done: "resumed", to: false,
		get: func(fs *v1alpha1.FlashSale) bool { return fs.Spec.Paused },
		set: func(fs *v1alpha1.FlashSale, v bool) { fs.Spec.Paused = v },
	})
}

func newCloseCommand(o *options) *cobra.Command {
	return o.switchCommand(switchCmd{
		use: "close NAME", short: "End a sale early (spec.closed: true); it cannot be reopened",
		long: `Set spec.closed: purchases close as at endTime (410 ENDED) from the moment
the operator sees it (status.closedAt), and the sale drains and settles from
then on. The API server refuses to set it back to false: buyers were told
the sale ended. A sale already past its endTime is left as it is: there is
nothing left to close.`,
		field: "spec.closed", done: "closed", to: true,
		get:  func(fs *v1alpha1.FlashSale) bool { return fs.Spec.Closed },
		set:  func(fs *v1alpha1.FlashSale, v bool) { fs.Spec.Closed = v },
		note: "purchases close once the operator sees it (status.closedAt); this cannot be undone",
		moot: pastEnd,
	})
}

// pastEnd: a sale past its endTime has no purchases left to close. The
// operator would record the close but keep endTime as the end (the earlier
// of the two), so spec.closed would only make the sale read as closed early.
func pastEnd(fs *v1alpha1.FlashSale, now time.Time) string {
	end := fs.Spec.EndTime.Time
	if now.Before(end) {
		return ""
	}
	return fmt.Sprintf("already past its end (endTime %s, %s ago): nothing to close",
		end.UTC().Format(time.RFC3339), age(now, end))
}

func (o *options) switchCommand(sw switchCmd) *cobra.Command {
	return &cobra.Command{
		Use: sw.use, Short: sw.short, Long: sw.long,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := o.client()
			if err != nil {
				return err
			}
			return sw.run(cmd, c, ns, args[0])
		},
	}
}

// run patches the switch, or says there is nothing to change. A closed sale
// refuses pause and resume: its purchases are over either way.
func (sw switchCmd) run(cmd *cobra.Command, c client.Client, ns, name string) error {
	ctx := cmd.Context()
	fs, err := getSale(ctx, c, ns, name)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if sw.get(fs) == sw.to {
		_, err := fmt.Fprintf(out, "%s already %s (%s: %t): no change\n", ref(fs), sw.done, sw.field, sw.to)
		return err
	}
	if fs.Spec.Closed && sw.field != "spec.closed" {
		return fmt.Errorf("%s is closed (spec.closed: true): purchases are over, %s changes nothing", ref(fs), sw.field)
	}
	if sw.moot != nil {
		if why := sw.moot(fs, time.Now()); why != "" {
			_, err := fmt.Fprintf(out, "%s %s: no change\n", ref(fs), why)
			return err
		}
	}
	orig := fs.DeepCopy()
	sw.set(fs, sw.to)
	if err := c.Patch(ctx, fs, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("patch %s %s: %w", ref(fs), sw.field, err)
	}
	msg := fmt.Sprintf("%s %s (%s: %t → %t)", ref(fs), sw.done, sw.field, !sw.to, sw.to)
	if sw.note != "" {
		msg += ": " + sw.note
	}
	_, err = fmt.Fprintln(out, msg)
	return err
}
