package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/relayproject/relay/check"
)

const checkUsage = `Usage:
  relay check turn:HOST[:PORT][?transport=udp|tcp] -secret S [-user ID]
  relay check turn:HOST[:PORT][?transport=udp|tcp] -config FILE [-user ID]
  relay check turn:HOST[:PORT][?transport=udp|tcp] -user U -pass P
  relay check turns:HOST[:PORT][?transport=tcp] (-secret S | -user U -pass P) [-ca FILE | -insecure]
  relay check stun:HOST[:PORT]
  relay check http(s)://HOST:PORT/ice [-token T] [-ca FILE | -insecure]

Checks a STUN/TURN deployment from here: STUN Binding, Allocate, a second Allocate,
CreatePermission, datagrams from one allocation to the other and back through the relay,
and Refresh with lifetime 0. An ICE endpoint URL checks every URL it lists, with the
credentials it hands out. Exit status: 0 all passed, 1 a check failed, 2 usage error.

Flags:
`

// checkCmd runs `relay check` and returns the exit status.
func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o check.Options
	fs.StringVar(&o.Secret, "secret", "", "shared secret to mint TURN REST credentials with (username <now+1h>:<user id>)")
	fs.StringVar(&o.User, "user", "", "with -secret: the user id (default \""+check.DefaultUser+"\"); else the static username")
	fs.StringVar(&o.Password, "pass", "", "static password, with -user")
	configPath := fs.String("config", "", "instead of -secret: the server's config file, whose first [auth] secret signs (as relay creds does)")
	fs.StringVar(&o.Token, "token", "", "ICE endpoint API token, sent as Authorization: Bearer")
	fs.StringVar(&o.CAFile, "ca", "", "PEM file of a private CA to trust for turns: and https:")
	fs.BoolVar(&o.Insecure, "insecure", false, "skip TLS certificate verification")
	fs.DurationVar(&o.Timeout, "timeout", check.DefaultTimeout, "time limit of each step")
	fs.StringVar(&o.Peer, "peer", "", "external UDP echo peer host:port for the round trip (default: between two allocations)")
	fs.IntVar(&o.Count, "count", check.DefaultCount, "datagrams in the round trip")
	fs.Usage = func() {
		fmt.Fprint(stderr, checkUsage)
		fs.PrintDefaults()
	}
	// The URL may come before or after the flags.
	var urls []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		urls = append(urls, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(urls) != 1 {
		fmt.Fprintf(stderr, "relay check: want exactly one URL, got %d\n\n", len(urls))
		fs.Usage()
		return 2
	}
	o.URL = urls[0]
	o.Out = stdout
	if *configPath != "" {
		secret, err := secretFrom(*configPath, o)
		if err != nil {
			fmt.Fprintf(stderr, "relay check: %v\n", err)
			return 2
		}
		o.Secret = secret
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := check.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "relay check: %v\n", err)
		return 2
	}
	if !report.OK() {
		return 1
	}
	return 0
}

// secretFrom reads the secret relay check -config signs with: the first of the file's
// [auth] secrets. A file without one is refused in the words relay -require-secret (the
// service) uses, so that checking the config and starting the service agree.
func secretFrom(path string, o check.Options) (string, error) {
	if o.Secret != "" || o.Password != "" {
		return "", errors.New("-config takes the place of -secret and -pass: give one of them")
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return "", err
	}
	if err := requireSecret(cfg); err != nil {
		return "", err
	}
	return cfg.Auth.Secrets[0], nil
}
