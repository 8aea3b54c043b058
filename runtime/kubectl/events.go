package kubectl

import (
	"context"
	"fmt"
	"sort"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// saleEvents are the latest Events about the sale (the operator records
// them through events.k8s.io/v1), oldest first, at most maxEvents. The API
// server selects them by regarding.uid; one that refuses the field selector
// gets the namespace's Events filtered here.
func saleEvents(ctx context.Context, c client.Reader, fs *v1alpha1.FlashSale) ([]eventsv1.Event, error) {
	var list eventsv1.EventList
	err := c.List(ctx, &list, client.InNamespace(fs.Namespace), client.MatchingFields{"regarding.uid": string(fs.UID)})
	if apierrors.IsBadRequest(err) {
		err = c.List(ctx, &list, client.InNamespace(fs.Namespace))
	}
	if err != nil {
		return nil, fmt.Errorf("list the Events of %s: %w", ref(fs), err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.UID == fs.UID {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(&out[i]).Before(eventTime(&out[j])) })
	if len(out) > maxEvents {
		out = out[len(out)-maxEvents:]
	}
	return out, nil
}

// eventTime is when an Event last happened: a repeated Event's series
// carries the latest occurrence.
func eventTime(e *eventsv1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.DeprecatedLastTimestamp.IsZero():
		return e.DeprecatedLastTimestamp.Time
	default:
		return e.CreationTimestamp.Time
	}
}
