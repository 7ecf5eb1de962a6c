package clerkapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk/clerk-sdk-go/v2"
)

const userAgent = "clerk-ledger (clerkapi; clerk-sdk-go/v2.4.2 wire format)"

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

var errTooLarge = errors.New("response body too large")

// get sends GET rawURL and returns the body of a 2xx answer, read into buf's
// memory (grown as needed; the returned slice may be a new one). It retries
// 429 (after Retry-After), 408, 5xx and network errors up to maxAttempts
// attempts in all, and turns every other outcome into a domain error.
func (c *Client) get(ctx context.Context, op, rawURL string, buf []byte) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		if err := c.waitTurn(ctx); err != nil {
			return buf, err
		}
		body, errBody, status, header, err := c.once(ctx, rawURL, buf)
		if body != nil {
			buf = body
		}
		if ctx.Err() != nil {
			return buf, ctx.Err()
		}
		if err == nil && status >= 200 && status < 300 {
			return body, nil
		}
		if errors.Is(err, errTooLarge) {
			return buf, domain.Errorf(domain.EINTERNAL, "Clerk Backend API response exceeds %d bytes", c.maxBody)
		}
		var wait time.Duration
		throttled := false
		switch {
		case err != nil: // network error, or the body broke off
		case status == http.StatusTooManyRequests:
			throttled = true
		case status >= 500 || status == http.StatusRequestTimeout:
		default:
			return buf, statusError(status, errBody)
		}
		if d, ok := retryAfter(header, time.Now()); ok && err == nil {
			wait = min(d, c.maxRetry)
		} else {
			wait = c.backoff(attempt)
		}
		if attempt >= c.maxAttempts {
			return buf, exhausted(attempt, status, err)
		}
		attrs := []any{"op", op, "attempt", attempt, "wait_ms", wait.Milliseconds()}
		if err != nil {
			attrs = append(attrs, "error", errorText(err))
		} else {
			attrs = append(attrs, "status", status)
		}
		c.log.Warn("clerk backend api request failed, retrying", attrs...)
		if throttled {
			// Clerk's limit is per instance: hold back every request of this
			// client, not just this one.
			c.pause(time.Now().Add(wait))
		} else if err := sleep(ctx, wait); err != nil {
			return buf, err
		}
	}
}

// once makes one attempt. body is a 2xx answer's body in buf's memory (nil
// otherwise); errBody is a bounded prefix of any other answer's body.
func (c *Client) once(ctx context.Context, rawURL string, buf []byte) (body, errBody []byte, status int, header http.Header, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Clerk-API-Version", apiVersion)
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		// Error bodies are short: a bounded prefix, in its own memory.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, b, resp.StatusCode, resp.Header, nil
	}
	body, err = readBody(resp.Body, resp.ContentLength, buf, c.maxBody)
	return body, nil, resp.StatusCode, resp.Header, err
}

// readBody reads r (of length n, -1 if unknown) into buf's memory, failing
// with errTooLarge past limit bytes.
func readBody(r io.Reader, n int64, buf []byte, limit int64) ([]byte, error) {
	buf = buf[:0]
	if n > limit {
		return buf, errTooLarge
	}
	if n >= 0 && int64(cap(buf)) < n+1 {
		buf = make([]byte, 0, n+1) // +1: EOF is seen without growing
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(cap(buf), 64<<10))
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if int64(len(buf)) > limit {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// waitTurn waits out a 429 pause and then the client-side limiter.
func (c *Client) waitTurn(ctx context.Context) error {
	c.mu.Lock()
	until := c.pauseUntil
	c.mu.Unlock()
	if d := time.Until(until); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	if c.limiter == nil {
		return nil
	}
	if err := c.limiter.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("waiting for the client-side rate limit would pass the deadline: %w", context.DeadlineExceeded)
	}
	return nil
}

func (c *Client) pause(until time.Time) {
	c.mu.Lock()
	if until.After(c.pauseUntil) {
		c.pauseUntil = until
	}
	c.mu.Unlock()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff is the wait before retry n: uniform in [d/2, d] with
// d = min(baseBackoff·2^(n-1), maxBackoff).
func (c *Client) backoff(n int) time.Duration {
	d := c.maxBackoff
	if n <= 30 {
		if b := c.baseBackoff << (n - 1); b > 0 && b < d {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// retryAfter reads a Retry-After header: delay-seconds, or an HTTP date
// (measured from the response's Date when it has one, so a skewed local
// clock does not matter). ok is false when there is none or it is malformed.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second) // the caller caps it far lower
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		now = d
	}
	return max(0, at.Sub(now)), true
}

// exhausted is the error after the last attempt failed.
func exhausted(attempts, status int, err error) error {
	switch {
	case err != nil:
		return domain.Errorf(domain.EUNAVAILABLE, "Clerk Backend API is unreachable after %d attempts: %s", attempts, errorText(err))
	case status == http.StatusTooManyRequests:
		return domain.Errorf(domain.ERATELIMIT, "Clerk Backend API is still rate limiting (HTTP 429) after %d attempts; retry later", attempts)
	}
	return domain.Errorf(domain.EUNAVAILABLE, "Clerk Backend API is unavailable: HTTP %d after %d attempts", status, attempts)
}

// errorText is err's message without the request URL url.Error adds.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// statusError turns a response that is not retried into a domain error,
// with Clerk's error code and message when the body is Clerk's error JSON
// (clerk.APIErrorResponse).
func statusError(status int, body []byte) error {
	detail := fmt.Sprintf("HTTP %d", status)
	var apiErr clerk.APIErrorResponse
	if json.Unmarshal(body, &apiErr) == nil && len(apiErr.Errors) > 0 {
		e := apiErr.Errors[0]
		if e.Code != "" {
			detail += " " + clean(e.Code)
		}
		if msg := cmpOr(e.LongMessage, e.Message); msg != "" {
			detail += ": " + clean(msg)
		}
		if apiErr.TraceID != "" {
			detail += " (clerk_trace_id " + clean(apiErr.TraceID) + ")"
		}
	}
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return domain.Errorf(domain.EUNAUTHORIZED, "CLERK_SECRET_KEY was refused by the Clerk Backend API (%s)", detail)
	case http.StatusNotFound:
		return domain.Errorf(domain.ENOTFOUND, "Clerk Backend API: not found (%s)", detail)
	}
	return domain.Errorf(domain.EINVALID, "Clerk Backend API refused the request (%s)", detail)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// clean keeps a server-provided text to one printable line of bounded length.
func clean(s string) string {
	const maxLen = 300
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxLen {
			b.WriteString("…")
			break
		}
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()
}
