package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"specversion":"1.0","id":"uid.live"}`)
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	SetHeaders(h, secret, "uid.live", now, body)

	// The signature is the spec's: HMAC-SHA256 over id.timestamp.body.
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("uid.live.1800000000." + string(body)))
	if want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)); h.Get(HeaderSignature) != want {
		t.Fatalf("webhook-signature %q, want %q", h.Get(HeaderSignature), want)
	}
	if h.Get(HeaderID) != "uid.live" || h.Get(HeaderTimestamp) != "1800000000" {
		t.Fatalf("headers %v", h)
	}
	if err := Verify(secret, h, body, now.Add(time.Minute), 0); err != nil {
		t.Fatalf("Verify with the secret: %v", err)
	}

	for _, c := range []struct {
		name   string
		secret []byte
		body   []byte
		now    time.Time
		want   error
	}{
		{"another secret", []byte("other"), body, now, ErrSignature},
		{"a changed body", secret, []byte(`{"id":"uid.live"}`), now, ErrSignature},
		{"a replay an hour later", secret, body, now.Add(time.Hour), ErrTimestamp},
	} {
		if err := Verify(c.secret, h, c.body, c.now, 0); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
	if err := Verify(secret, http.Header{}, body, now, 0); !errors.Is(err, ErrNoSignature) {
		t.Errorf("no headers: Verify = %v, want %v", err, ErrNoSignature)
	}

	// During a key rotation a receiver may see several signatures: one match will do.
	h.Set(HeaderSignature, "v1,bm90LWl0 "+h.Get(HeaderSignature))
	if err := Verify(secret, h, body, now, 0); err != nil {
		t.Fatalf("Verify with two signatures, the second right: %v", err)
	}
}

// A Standard Webhooks secret (whsec_ + base64) signs with its decoded key,
// as the spec's libraries verify.
func TestSignStandardWebhooksSecret(t *testing.T) {
	raw := []byte("0123456789abcdef0123456789abcdef")
	secret := []byte("whsec_" + base64.StdEncoding.EncodeToString(raw))
	now := time.Unix(1_800_000_000, 0)
	if got, want := Sign(secret, "id", now, []byte("{}")), Sign(raw, "id", now, []byte("{}")); got != want {
		t.Fatalf("whsec_ secret signs %q, its decoded key %q", got, want)
	}
}
