package signaling

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// checkParse holds parseMessage to encoding/json's reading of the same bytes, and its
// output to valid JSON that says the same. Used by the table below and by FuzzMessages.
func checkParse(t *testing.T, data []byte) {
	t.Helper()
	got, ok := parseMessage(data)
	want, wantOK := decodeMessage(data)
	if !utf8.Valid(data) {
		wantOK = false // not forwardable in a text frame: ignored
	}
	if ok != wantOK {
		t.Fatalf("%q: parsed %v, encoding/json %v", data, ok, wantOK)
	}
	if !ok {
		return
	}
	if got.typ != want.typ || got.dst != want.dst || !bytes.Equal(got.payload, want.payload) {
		t.Fatalf("%q: parsed %+v, encoding/json %+v", data, got, want)
	}
	out := appendOutbound(nil, got.typ, "src\u2028<", got.dst, got.payload)
	var back outbound
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("%q: outbound %q is not JSON: %v", data, out, err)
	}
	if back.Type != want.typ || back.Src != "src\u2028<" || back.Dst != want.dst || !bytes.Equal(back.Payload, want.payload) {
		t.Fatalf("%q: outbound %q reads back as %+v", data, out, back)
	}
}

func TestParseMessage(t *testing.T) {
	for _, in := range []string{
		`{"type":"OFFER","dst":"b","payload":{"sdp":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},"connectionId":"dc_1"}}`,
		` { "type" : "CANDIDATE" , "dst" : "bob" , "payload" : [1, -2.5e+3, true, false, null, "\u00e9\"\\\/"] } `,
		`{"type":"HEARTBEAT"}`,
		`{}`,
		`{"type":"LEAVE","dst":""}`,
		`{"type":"OFFER","dst":"b","src":"spoof","extra":{"deep":[[[]]]},"payload":1}`,
		// Duplicates: the last wins; null leaves a string as it was, and is a payload.
		`{"type":"OFFER","type":"ANSWER","dst":"a","dst":"b","payload":1,"payload":2}`,
		`{"type":"OFFER","type":null,"dst":"b","dst":null}`,
		`{"type":"OFFER","dst":"b","payload":null}`,
		// Keys encoding/json matches case-insensitively or after unescaping.
		`{"TYPE":"OFFER","Dst":"b","PayLoad":7}`,
		`{"t\u0079pe":"OFFER","dst":"b"}`,
		`{"type":"OFFER","dſt":"b"}`,
		// Strings with escapes or non-ASCII.
		`{"type":"OFF\u0045R","dst":"b\n\u00e9"}`,
		`{"type":"OFFER","dst":"日本"}`,
		// What json.Unmarshal refuses: ignored.
		`{"type":7,"dst":"b"}`,
		`{"type":"OFFER","dst":{"a":1}}`,
		`{"type":"OFFER","dst":"b","type":[]}`,
		`{not json`,
		`{"type":"OFFER",}`,
		`{"type":"OFFER"} x`,
		`{"type":"OFFER","payload":01}`,
		`{"type":"OFFER","payload":1.}`,
		`{"type":"OFFER","payload":"\x"}`,
		`{"type":"OFFER","payload":"tab	inside"}`,
		`{"type":"OFFER","payload":tru}`,
		`{"type":"OFFER","payload":[1,]}`,
		`[]`,
		`"OFFER"`,
		`null`,
		``,
		"{\"type\":\"OFFER\",\"dst\":\"b\",\"payload\":\"\xff\"}",
		`{"type":"OFFER","payload":` + string(bytes.Repeat([]byte("["), 100)) + string(bytes.Repeat([]byte("]"), 100)) + `}`,
	} {
		checkParse(t, []byte(in))
	}
}

// TestScanMessageCommonShape: the messages PeerJS clients send take the one-pass path.
func TestScanMessageCommonShape(t *testing.T) {
	for _, in := range []string{
		`{"type":"OFFER","payload":{"sdp":{"type":"offer","sdp":"v=0\r\n"},"type":"data","connectionId":"dc_1","metadata":null,"label":"dc_1","reliable":false,"serialization":"binary"},"dst":"bob"}`,
		`{"type":"CANDIDATE","payload":{"candidate":{"candidate":"candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Bx3f"},"type":"data","connectionId":"dc_1"},"dst":"bob"}`,
		`{"type":"HEARTBEAT"}`,
	} {
		if _, known := scanMessage([]byte(in)); !known {
			t.Errorf("%s: left to encoding/json", in)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain-id_1", "quote\" back\\ slash", "<a>&b", "ctl\x00\x01\x1f\t\n\r", "é日本", "\u2028\u2029", "bad\xffutf8\xc3"} {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
}
