// Package notify sends a sale's milestones to webhooks: each event is a
// structured-mode CloudEvent (JSON), signed as the Standard Webhooks spec
// says, and delivered at least once by a Dispatcher that retries with an
// exponential backoff and never blocks its caller.
package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

// TypePrefix starts the CloudEvents type of every event: the event's name
// in lower case follows (dev.flashsale.soldout).
const TypePrefix = "dev.flashsale."

// ContentType is the Content-Type of a delivery: a structured-mode CloudEvent.
const ContentType = "application/cloudevents+json"

// Event is one milestone of a sale, as it is delivered.
type Event struct {
	// ID is the CloudEvent id, the same on every retry and endpoint: a
	// receiver drops a repeat by it.
	ID string
	// Name is the event's kind (Live, SoldOut, ...).
	Name string
	// Source is the sale's URI reference: see Source.
	Source string
	// Subject is the SKU id of a SoldOut event; empty otherwise.
	Subject string
	// Time is when the milestone was seen.
	Time time.Time
	// Data is the event's JSON payload; empty for none.
	Data []byte
}

// Source is the CloudEvents source of a sale's events: its API path.
func Source(namespace, name string) string {
	return "/apis/flashsale.dev/v1alpha1/namespaces/" + namespace + "/flashsales/" + name
}

// Type is the CloudEvents type of an event named name.
func Type(name string) string { return TypePrefix + strings.ToLower(name) }

// Encode renders ev as a structured-mode CloudEvent 1.0 in JSON.
func Encode(ev Event) ([]byte, error) {
	ce := cloudevents.New(cloudevents.CloudEventsVersionV1)
	ce.SetID(ev.ID)
	ce.SetSource(ev.Source)
	ce.SetType(Type(ev.Name))
	ce.SetTime(ev.Time.UTC())
	if ev.Subject != "" {
		ce.SetSubject(ev.Subject)
	}
	if len(ev.Data) > 0 {
		if !json.Valid(ev.Data) {
			return nil, fmt.Errorf("event %s: data is not JSON", ev.ID)
		}
		// A RawMessage goes out as written, as "data"; plain bytes would be
		// base64 in "data_base64".
		if err := ce.SetData(cloudevents.ApplicationJSON, json.RawMessage(ev.Data)); err != nil {
			return nil, fmt.Errorf("event %s: %w", ev.ID, err)
		}
	}
	if err := ce.Validate(); err != nil {
		return nil, fmt.Errorf("event %s: %w", ev.ID, err)
	}
	return json.Marshal(ce)
}
