package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// UsageError is a command line the flag package refused (exit status 2).
type UsageError struct{ err error }

func (e UsageError) Error() string { return e.err.Error() }
func (e UsageError) Unwrap() error { return e.err }

func UsageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return UsageError{err}
}

// IsHelp reports an argument that asks for help.
func IsHelp(a string) bool { return a == "-h" || a == "--help" || a == "help" }

// Verbs prints a command's verbs: as help (exit 0) when asked for, as a
// usage error (exit 2) when none was given.
func Verbs(out io.Writer, args []string, text string) error {
	if len(args) == 0 {
		return UsageErr(errors.New("which one? " + text))
	}
	fmt.Fprintln(out, "usage: "+text)
	return flag.ErrHelp
}
