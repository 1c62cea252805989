package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// Error is one problem in a configuration. Its text has the form
//
//	relay.toml:12: turn.relay_ports = "65535-1": expected "MIN-MAX" ...
//
// When Value is empty (unknown keys, syntax errors) Msg names the key itself.
type Error struct {
	Source string // file name, or DefaultSource
	Line   int    // 1-based line of the key in Source; 0 when unknown
	Column int    // 1-based column; set only for TOML syntax errors
	Key    string // full dotted key, e.g. "turn.relay_ports"; "" for syntax errors
	Value  string // offending value in TOML syntax, "***" for secrets; may be ""
	Msg    string // what is wrong and what is expected instead
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Key != "" && e.Value != "" {
		fmt.Fprintf(&b, "%s = %s: ", e.Key, e.Value)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration, sorted by line. It is
// the error type returned by Parse, Load and Validate; use errors.As to get
// at it, or at its first *Error.
type Errors []*Error

// Error returns one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As and errors.Is see the individual errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sort orders by line, keeping check order within a line; errors without a
// line go last since they cannot be pointed at in the file.
func (es Errors) sort() {
	rank := func(e *Error) int {
		if e.Line == 0 {
			return math.MaxInt
		}
		return e.Line
	}
	slices.SortStableFunc(es, func(a, b *Error) int { return cmp.Compare(rank(a), rank(b)) })
}

// locator turns keys into *Error values with the key's line in the file.
type locator struct {
	source string
	lines  map[string]int // keyString(path) -> line; nil if not from a file
}

// errorf builds an error for key. value is the offending value as decoded
// from TOML or as a Go string, or nil when there is none to show.
func (l locator) errorf(key string, value any, format string, args ...any) *Error {
	e := &Error{Source: l.source, Line: l.lines[key], Key: key, Msg: fmt.Sprintf(format, args...)}
	if value != nil {
		e.Value = showValue(key, value)
	}
	return e
}

// sensitive reports whether values under key must never be printed: they
// are credentials, and error text ends up in logs and bug reports. A whole
// section written as a value ("auth = [...]", "signal = [...]") may hold them
// too.
func sensitive(key string) bool {
	return key == "auth" || strings.HasPrefix(key, "auth.secrets") || strings.HasPrefix(key, "auth.users") ||
		key == "signal" || strings.HasPrefix(key, "signal.api_tokens") || key == "cluster" ||
		key == "admin" || strings.HasPrefix(key, "admin.tokens")
}

// showValue renders value the way it would be written in TOML, shortened
// so that one error stays one readable line.
func showValue(key string, value any) string {
	if sensitive(key) {
		return `"***"`
	}
	if key == "cluster.redis" {
		// The URL may carry the Redis password: show it with the password hidden.
		if v, ok := value.(string); ok {
			value = redactURL(v)
		} else {
			return `"***"`
		}
	}
	s := formatValue(value)
	if len(s) > 100 {
		s = strings.ToValidUTF8(s[:97], "") + "..."
	}
	return s
}

func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = formatValue(x)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []string:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = strconv.Quote(x)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		parts := make([]string, 0, len(v))
		for _, k := range slices.Sorted(maps.Keys(v)) {
			parts = append(parts, keyString([]string{k})+" = "+formatValue(v[k]))
		}
		return "{ " + strings.Join(parts, ", ") + " }"
	case []map[string]any:
		return "[[...]]"
	default:
		return fmt.Sprint(v)
	}
}

// typeName names the TOML type of a decoded value for "found ..." messages.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	default:
		// time.Time and the toml.Local* types.
		return "a date/time"
	}
}

// keyString joins a key path the way it is written in TOML, quoting pieces
// that are not bare keys. It is also the index of locator.lines, so that
// keys built while decoding and keys seen while scanning the text agree.
func keyString(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		if isBareKey(p) {
			parts[i] = p
		} else {
			parts[i] = strconv.Quote(p)
		}
	}
	return strings.Join(parts, ".")
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareChar(s[i]) {
			return false
		}
	}
	return true
}

func isBareChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// syntaxError converts the TOML library's error, keeping its position and
// message. Messages can quote fragments of the input, so fragments are
// masked when the parser was inside a credential.
func syntaxError(source, text string, err error) *Error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return &Error{Source: source, Msg: "cannot parse TOML: " + err.Error()}
	}
	msg := pe.Message
	if sensitive(pe.LastKey) || pe.LastKey == "cluster.redis" {
		msg = maskQuoted(msg)
	}
	if pe.LastKey != "" {
		msg += fmt.Sprintf(" (after key %q)", pe.LastKey)
	}
	line, col := pe.Position.Line, pe.Position.Col
	if start := pe.Position.Start; start > 0 && start <= len(text) {
		// The byte offset is exact, but the library's line and column are
		// off by one line when the error is at a line break, so derive
		// them from the offset.
		before := text[:start]
		line = strings.Count(before, "\n") + 1
		col = utf8.RuneCountInString(before[strings.LastIndexByte(before, '\n')+1:]) + 1
	}
	return &Error{Source: source, Line: line, Column: col, Msg: "TOML syntax error: " + msg}
}

// maskQuoted replaces quoted fragments that contain letters or digits with
// ***, leaving punctuation like (',') readable.
func maskQuoted(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexAny(s, `"'`)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		q := s[i]
		j := strings.IndexByte(s[i+1:], q)
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		inner := s[i+1 : i+1+j]
		b.WriteString(s[:i+1])
		if strings.IndexFunc(inner, func(r rune) bool {
			return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 127
		}) >= 0 {
			b.WriteString("***")
		} else {
			b.WriteString(inner)
		}
		b.WriteByte(q)
		s = s[i+2+j:]
	}
}

// closest returns the candidate nearest to name by edit distance (ignoring
// case), or "" when none is close enough to be a plausible typo.
func closest(name string, candidates []string) string {
	best, bestDist := "", -1
	lname := strings.ToLower(name)
	for _, c := range candidates {
		d := editDistance(lname, strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// One edit always counts; longer names may have more, up to a third.
	if bestDist < 0 || bestDist > max(1, len(name)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
