package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/relayproject/relay/config"
	"github.com/relayproject/relay/relay"
)

// credsOutput is the TURN REST API answer (draft-uberti-behave-turn-rest).
type credsOutput struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

func creds(args []string, out, stderr io.Writer) error {
	fs := flag.NewFlagSet("relay creds", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file whose [auth] secrets sign the credentials (the first secret signs)")
	user := fs.String("user", "user", "user id after the ':' in the username; quotas count allocations per user id")
	ttl := fs.Duration("ttl", time.Hour, "how long the credentials stay valid; clamped to [auth] max_ttl")
	host := fs.String("host", "", "host for the uris (default: [signal] public_host, else public_ip, else relay_ip, else this machine's address)")
	help := func(w io.Writer) {
		credsUsage(w)
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, help, out, stderr); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	if len(cfg.Auth.Secrets) == 0 {
		return errors.New("no [auth] secrets configured: relay creds signs with the server's shared secret, so give -config a file whose auth.secrets the server also uses")
	}
	a, err := newAuthenticator(cfg)
	if err != nil {
		return err
	}
	c, err := a.Mint(*user, *ttl)
	if err != nil {
		return err
	}
	h := *host
	if h == "" {
		h = uriHost(cfg)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(credsOutput{Username: c.Username, Password: c.Password, TTL: c.TTL, URIs: relay.TURNURIs(cfg, h)})
}

func credsUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  relay creds [-config FILE] [-user ID] [-ttl 1h] [-host H]

Prints time-limited TURN credentials (TURN REST: username <expiry>:<user id>, password
HMAC-SHA1 of the first [auth] secret) and the server's turn:/turns: URIs, as JSON.
`)
}

// uriHost is the host put in the URIs relay prints: [signal] public_host when set, as
// the ICE endpoint does, since that is the name a TLS certificate carries and turns:
// clients check the certificate against the URI's host; else the advertised address.
func uriHost(cfg *config.Config) string {
	if cfg.Signal.PublicHost != "" {
		return cfg.Signal.PublicHost
	}
	return relay.AdvertisedHost(cfg)
}
