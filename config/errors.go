package config

import (
	"fmt"
	"strings"
)

// Error is one configuration error. Its Error method reads like an nginx
// [emerg] line: Msg (which names the directive, in nginx's own wording where
// nginx has one) followed by " in FILE:LINE".
type Error struct {
	Pos       Pos
	Directive string // the directive the error is about; "" for pure syntax errors
	Msg       string // the message without the position
}

func (e *Error) Error() string {
	if e.Pos.File == "" || e.Pos.Line == 0 { // e.g. the main file cannot be opened, as nginx words it
		return e.Msg
	}
	return fmt.Sprintf("%s in %s:%d", e.Msg, e.Pos.File, e.Pos.Line)
}

// ErrorList is every error Load found, in the order found. Load returns a
// non-empty ErrorList (never a bare *Error), so errors.As(err, &e) with
// e *Error yields the first one.
type ErrorList []*Error

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap lets errors.As and errors.Is see each *Error.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// String formats w like an nginx [warn] line: "MSG in FILE:LINE".
func (w Warning) String() string {
	if w.Pos.File == "" {
		return w.Msg
	}
	return fmt.Sprintf("%s in %s:%d", w.Msg, w.Pos.File, w.Pos.Line)
}
