// Command relay runs the relay STUN/TURN server, and mints credentials for it.
//
//	relay [-config FILE] [-require-secret]      serve (no file: embedded defaults)
//	relay creds [-config FILE] [-user ID] [-ttl 1h]
//	relay check URL [flags]
//	relay admin [-url U] [-token T] [-json] COMMAND   (the admin API's client)
//	relay version                               (also relay -version, relay --version)
//
// This package only parses flags and assembles the packages that do the work.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs one command line and returns the exit status: 0 done (or help asked for), 1
// failed, 2 the command line itself is wrong.
func run(args []string, stdout, stderr io.Writer) int {
	verb := ""
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		verb, args = args[0], args[1:]
	}
	var err error
	switch verb {
	case "", "serve":
		err = serve(args, stdout, stderr)
	case "creds":
		err = creds(args, stdout, stderr)
	case "check":
		return checkCmd(args, stdout, stderr)
	case "admin":
		err = adminCmd(args, stdout, stderr)
	case "version":
		if len(args) > 0 {
			err = usageErrorf("relay version takes no arguments, got %q", args[0])
			break
		}
		fmt.Fprintln(stdout, versionString())
	case "help":
		usage(stdout)
	default:
		err = usageErrorf("unknown command %q", verb)
	}
	var ue *usageError
	var xe *exitError
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	case errors.As(err, &xe):
		fmt.Fprintf(stderr, "relay: %v\n", err)
		return xe.code
	case errors.As(err, &ue):
		if !ue.printed {
			fmt.Fprintf(stderr, "relay: %s\n\n", ue.msg)
			usage(stderr)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "relay: %v\n", err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  relay [-config FILE]                            serve STUN/TURN (no file: embedded defaults)
  relay creds [-config FILE] [-user ID] [-ttl 1h] print time-limited TURN credentials as JSON
  relay check URL [flags]                         check a deployment from here (relay check -h)
  relay admin [-url U] [-token T] COMMAND         operate a running relay: allocations, kill,
                                                  revoke, failures, usage, events (relay admin -h)
  relay version                                   print the version (also -version, --version)
  relay help                                      print this help (also -h, --help)

Flags of relay (serve):
  -config FILE     TOML config file; empty: embedded defaults, which work on a laptop
  -require-secret  refuse to start without [auth] secrets (exit status 78) instead of
                   generating a secret for the run; the systemd unit passes it
  -version         print the version and exit

See config.example.toml for every configuration key.
`)
}

// exitConfig is sysexits.h's EX_CONFIG (systemd shows it as status=78/CONFIG): the
// configuration cannot work as it is, so restarting would not help; the unit's
// RestartPreventExitStatus=78 says so.
const exitConfig = 78

// exitError is a failure with an exit status of its own, for systemd to tell apart.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errHelpShown: -h printed the help; the command line was fine and did nothing else.
var errHelpShown = errors.New("help shown")

// usageError is a wrong command line (exit status 2); run prints it with the usage
// unless that has been done already.
type usageError struct {
	msg     string
	printed bool
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseFlags parses a verb's flags. -h (or --help) prints help to stdout and returns
// errHelpShown; an unknown flag or a bad value is a usageError (the flag package prints
// the reason to stderr); so is any argument left over, which would otherwise be ignored.
func parseFlags(fs *flag.FlagSet, args []string, help func(io.Writer), stdout, stderr io.Writer) error {
	// The flag package's own messages are replaced by the ones below: help to stdout
	// for -h, the error and the usage to stderr otherwise.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help(stdout)
			return errHelpShown
		}
		fmt.Fprintf(stderr, "relay: %v\n\n", err)
		help(stderr)
		return &usageError{msg: err.Error(), printed: true}
	}
	if fs.NArg() > 0 {
		msg := fmt.Sprintf("unexpected argument %q: %s takes only flags (a config file goes after -config)", fs.Arg(0), fs.Name())
		fmt.Fprintf(stderr, "relay: %s\n\n", msg)
		help(stderr)
		return &usageError{msg: msg, printed: true}
	}
	return nil
}
