package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// maxICEBody bounds the ICE endpoint's answer.
const maxICEBody = 1 << 20

// httpError is a non-200 answer of the ICE endpoint.
type httpError struct {
	status int
	msg    string // its {"error": ...}, or the start of the body
	token  bool   // a token was sent
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d", e.status) }

func (e *httpError) explain() string {
	head := fmt.Sprintf("HTTP %d %s", e.status, http.StatusText(e.status))
	if e.msg != "" {
		head += ": " + e.msg
	}
	switch e.status {
	case http.StatusUnauthorized:
		if e.token {
			return head + " — the endpoint refused the -token given"
		}
		return head + " — the endpoint wants a token: pass -token T (one of the server's [signal] api_tokens)"
	case http.StatusForbidden:
		return head + " — refused by the endpoint's origin or access rules"
	case http.StatusTooManyRequests:
		return head + " — rate limited ([signal] ice_requests_per_minute); retry later"
	case http.StatusNotFound:
		return head + " — is this the ICE endpoint's URL ({path}ice)?"
	}
	return head
}

// iceEntry is one RTCIceServer: urls is a string or a list of strings.
type iceEntry struct {
	URLs       json.RawMessage `json:"urls"`
	Username   string          `json:"username"`
	Credential any             `json:"credential"`
}

func (e iceEntry) urls() ([]string, error) {
	var one string
	if json.Unmarshal(e.URLs, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(e.URLs, &many); err != nil {
		return nil, fmt.Errorf("urls is neither a string nor a list of strings")
	}
	return many, nil
}

// iceURL is one URL to check with the credentials listed next to it.
type iceURL struct {
	raw   string
	creds credentials
}

// checkICE fetches the ICE endpoint and checks every stun:, turn: and turns: URL it lists.
func (r *runner) checkICE(raw string) {
	t := r.target(raw)
	hp := &probe{timeout: r.timeout}
	if u, err := url.Parse(raw); err == nil {
		hp.u.host = u.Hostname()
		port := u.Port()
		hp.u.transport = "tcp"
		if u.Scheme == "https" {
			hp.u.transport = "tls"
			if port == "" {
				port = "443"
			}
		} else if port == "" {
			port = "80"
		}
		hp.u.port, _ = strconv.Atoi(port)
	}
	var list []iceURL
	if !r.step(r.ctx, t, "ICE endpoint", func(ctx context.Context) (string, error) {
		var detail string
		var err error
		list, detail, err = r.fetchICE(ctx, raw)
		return detail, err
	}, hp.diagnose) {
		return
	}
	for _, e := range list {
		u, err := parseServerURL(e.raw)
		if err != nil {
			bad := r.target(e.raw)
			r.step(r.ctx, bad, "URL", func(context.Context) (string, error) { return "", err },
				func(err error) string { return "cannot check this URL: " + err.Error() })
			continue
		}
		if u.isTURN() {
			r.checkTURN(u, e.creds)
		} else {
			r.checkSTUN(u)
		}
	}
}

func (r *runner) fetchICE(ctx context.Context, raw string) ([]iceURL, string, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = r.tls.Clone()
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "application/json")
	if r.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.opts.Token)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxICEBody))
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		he := &httpError{status: resp.StatusCode, token: r.opts.Token != ""}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			he.msg = e.Error
		} else {
			he.msg = strings.TrimSpace(string(body[:min(len(body), 200)]))
		}
		return nil, "", he
	}
	var answer struct {
		ICEServers []iceEntry `json:"iceServers"`
		TTL        int64      `json:"ttl"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, "", explainedf("the answer is not an iceServers JSON object: %v", err)
	}
	var list []iceURL
	seen := map[string]bool{}
	nSTUN, nTURN, username := 0, 0, ""
	for i, e := range answer.ICEServers {
		urls, err := e.urls()
		if err != nil {
			return nil, "", explainedf("iceServers[%d]: %v", i, err)
		}
		cred, _ := e.Credential.(string)
		for _, u := range urls {
			if seen[u] {
				continue
			}
			seen[u] = true
			if strings.HasPrefix(strings.ToLower(u), "turn") {
				nTURN++
				if username == "" {
					username = e.Username
				}
			} else {
				nSTUN++
			}
			list = append(list, iceURL{raw: u, creds: credentials{e.Username, cred}})
		}
	}
	if nTURN == 0 {
		return nil, "", explainedf("the ICE endpoint listed no turn: or turns: URL (%d iceServers)", len(answer.ICEServers))
	}
	detail := fmt.Sprintf("HTTP 200: %d stun: and %d turn:/turns: URLs", nSTUN, nTURN)
	if username != "" {
		detail += ", username " + username
	}
	if answer.TTL > 0 {
		detail += fmt.Sprintf(", ttl %d s", answer.TTL)
	}
	return list, detail, nil
}
