// Package domain is clerk-ledger's pure model: the Clerk webhook envelope, the
// stored ledger event, the User read model with its fold, and the error
// vocabulary every other package speaks. It depends on the standard library only.
package domain

import (
	"errors"
	"fmt"
)

// Error codes: the one error vocabulary of the application. handlers maps each
// to an HTTP status in one table; the CLI maps them to exit messages.
const (
	EINVALID      = "invalid"      // the caller's input is malformed
	EUNAUTHORIZED = "unauthorized" // no valid credentials (signature, session)
	EFORBIDDEN    = "forbidden"    // valid credentials, not allowed
	ENOTFOUND     = "not_found"    // the thing asked for does not exist
	ECONFLICT     = "conflict"     // the request conflicts with current state
	ETOOLARGE     = "too_large"    // the request body exceeds the limit
	ERATELIMIT    = "rate_limited" // the caller sent too much; retry later
	EUNAVAILABLE  = "unavailable"  // a dependency (the database) is down; retry later
	EINTERNAL     = "internal"     // a bug or unexpected failure
)

// Error is an application error with a code from the vocabulary above and a
// message that is safe to show to the caller. It never carries payloads,
// emails or tokens.
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface; it is the caller-safe message.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil
// and EINTERNAL for any other error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of the first *Error in err's
// chain, or a generic message for any other error so internals never leak.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
