package main

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"time"

	"github.com/relayproject/relay/relay"
)

// credsOutput is the TURN REST API answer (draft-uberti-behave-turn-rest).
type credsOutput struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

func creds(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("relay creds", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file whose [auth] secrets sign the credentials (the first secret signs)")
	user := fs.String("user", "user", "user id after the ':' in the username; quotas count allocations per user id")
	ttl := fs.Duration("ttl", time.Hour, "how long the credentials stay valid; clamped to [auth] max_ttl")
	host := fs.String("host", "", "host for the uris (default: public_ip, else relay_ip, else this machine's address)")
	if err := fs.Parse(args); err != nil {
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
		h = relay.AdvertisedHost(cfg)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(credsOutput{Username: c.Username, Password: c.Password, TTL: c.TTL, URIs: relay.TURNURIs(cfg, h)})
}
