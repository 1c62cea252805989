// Command relay runs the relay STUN/TURN server, and mints credentials for it.
//
//	relay [-config FILE]                        serve (no file: embedded defaults)
//	relay creds [-config FILE] [-user ID] [-ttl 1h]
//	relay version
//
// This package only parses flags and assembles the packages that do the work.
package main

import (
	"fmt"
	"os"
)

func main() {
	args := os.Args[1:]
	verb := ""
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		verb, args = args[0], args[1:]
	}
	var err error
	switch verb {
	case "", "serve":
		err = serve(args)
	case "creds":
		err = creds(args, os.Stdout)
	case "check":
		os.Exit(checkCmd(args, os.Stdout, os.Stderr))
	case "version":
		fmt.Println(versionString())
	case "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "relay: unknown command %q\n\n", verb)
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "relay: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `Usage:
  relay [-config FILE]                            serve STUN/TURN (no file: embedded defaults)
  relay creds [-config FILE] [-user ID] [-ttl 1h] print time-limited TURN credentials as JSON
  relay check URL [flags]                         check a deployment from here (relay check -h)
  relay version                                   print the version

See config.example.toml for every configuration key.
`)
}
