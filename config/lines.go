package config

import (
	"slices"
	"strconv"
	"strings"
)

// The TOML library keeps key positions to itself, so keyLines finds them
// with a small scanner of its own. It only runs on text the library has
// already accepted, so it does not validate anything: it just needs to
// follow table headers, (dotted, quoted) keys, and values that can span
// lines or contain key-like text — multi-line strings, arrays and inline
// tables — well enough not to lose track of where the next key starts.

// keyLines maps keyString of every key path defined in src to the 1-based
// line that defines it. Tables created implicitly by a dotted key or a
// nested header get the line of their first mention.
func keyLines(src string) map[string]int {
	s := &lineScanner{src: src, line: 1, lines: map[string]int{}, implicit: map[string]bool{}}
	s.document()
	return s.lines
}

type lineScanner struct {
	src      string
	pos      int
	line     int
	lines    map[string]int
	implicit map[string]bool // lines entries that came from a longer key
}

func (s *lineScanner) eof() bool { return s.pos >= len(s.src) }

func (s *lineScanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

func (s *lineScanner) advance() {
	if s.eof() {
		return
	}
	if s.src[s.pos] == '\n' {
		s.line++
	}
	s.pos++
}

// skipSpace skips blanks within a line.
func (s *lineScanner) skipSpace() {
	for c := s.peek(); c == ' ' || c == '\t'; c = s.peek() {
		s.advance()
	}
}

// skipBlank skips blanks, line breaks and comments.
func (s *lineScanner) skipBlank() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r', '\n':
			s.advance()
		case '#':
			for !s.eof() && s.peek() != '\n' {
				s.advance()
			}
		default:
			return
		}
	}
}

func (s *lineScanner) record(path []string, line int) {
	for i := 1; i < len(path); i++ {
		k := keyString(path[:i])
		if _, seen := s.lines[k]; !seen {
			s.lines[k] = line
			s.implicit[k] = true
		}
	}
	k := keyString(path)
	if _, seen := s.lines[k]; !seen || s.implicit[k] {
		s.lines[k] = line
		s.implicit[k] = false
	}
}

func (s *lineScanner) document() {
	var table []string
	for {
		s.skipBlank()
		if s.eof() {
			return
		}
		start, line := s.pos, s.line
		if s.peek() == '[' {
			// [table] or [[array.of.tables]]
			s.advance()
			if s.peek() == '[' {
				s.advance()
			}
			table = s.key()
			s.record(table, line)
			s.skipSpace()
			for s.peek() == ']' {
				s.advance()
			}
		} else if key := s.key(); len(key) > 0 {
			full := append(slices.Clone(table), key...)
			s.record(full, line)
			s.skipSpace()
			if s.peek() == '=' {
				s.advance()
			}
			s.value(full)
		}
		if s.pos == start {
			s.advance() // never loop on text we do not understand
		}
	}
}

// key reads a possibly dotted key and returns its pieces.
func (s *lineScanner) key() []string {
	var parts []string
	for {
		s.skipSpace()
		switch c := s.peek(); {
		case c == '"':
			parts = append(parts, unquote(s.basicString()))
		case c == '\'':
			raw := s.literalString()
			parts = append(parts, strings.Trim(raw, "'"))
		case isBareChar(c):
			start := s.pos
			for isBareChar(s.peek()) {
				s.advance()
			}
			parts = append(parts, s.src[start:s.pos])
		default:
			return parts
		}
		s.skipSpace()
		if s.peek() != '.' {
			return parts
		}
		s.advance()
	}
}

// value skips one value; keys of inline tables are recorded under path
// (nil inside arrays, where keys have no stable path).
func (s *lineScanner) value(path []string) {
	s.skipSpace()
	rest := s.src[s.pos:]
	switch {
	case strings.HasPrefix(rest, `"""`):
		s.multiline(`"""`, true)
	case strings.HasPrefix(rest, `'''`):
		s.multiline(`'''`, false)
	case strings.HasPrefix(rest, `"`):
		s.basicString()
	case strings.HasPrefix(rest, `'`):
		s.literalString()
	case strings.HasPrefix(rest, `[`):
		s.array()
	case strings.HasPrefix(rest, `{`):
		s.inlineTable(path)
	default:
		// Numbers, booleans and dates; dates may contain a space.
		for !s.eof() && !strings.ContainsRune(",]}#\r\n", rune(s.peek())) {
			s.advance()
		}
	}
}

// basicString skips a "..." string and returns it, quotes included.
func (s *lineScanner) basicString() string {
	start := s.pos
	s.advance()
	for !s.eof() && s.peek() != '"' && s.peek() != '\n' {
		if s.peek() == '\\' {
			s.advance()
		}
		s.advance()
	}
	s.advance()
	return s.src[start:min(s.pos, len(s.src))]
}

func (s *lineScanner) literalString() string {
	start := s.pos
	s.advance()
	for !s.eof() && s.peek() != '\'' && s.peek() != '\n' {
		s.advance()
	}
	s.advance()
	return s.src[start:min(s.pos, len(s.src))]
}

func (s *lineScanner) multiline(delim string, escapes bool) {
	for range 3 {
		s.advance()
	}
	for !s.eof() {
		if escapes && s.peek() == '\\' {
			s.advance()
			s.advance()
			continue
		}
		if strings.HasPrefix(s.src[s.pos:], delim) {
			for range 3 {
				s.advance()
			}
			// Up to two quotes right before the delimiter belong to the
			// content, so the delimiter may really be a few bytes on.
			for range 2 {
				if s.peek() == delim[0] {
					s.advance()
				}
			}
			return
		}
		s.advance()
	}
}

func (s *lineScanner) array() {
	s.advance()
	for {
		s.skipBlank()
		switch {
		case s.eof():
			return
		case s.peek() == ']':
			s.advance()
			return
		case s.peek() == ',':
			s.advance()
		default:
			start := s.pos
			s.value(nil)
			if s.pos == start {
				s.advance()
			}
		}
	}
}

func (s *lineScanner) inlineTable(path []string) {
	s.advance()
	for {
		// TOML 1.1 allows newlines and comments inside inline tables.
		s.skipBlank()
		switch {
		case s.eof():
			return
		case s.peek() == '}':
			s.advance()
			return
		case s.peek() == ',':
			s.advance()
		default:
			start, line := s.pos, s.line
			key := s.key()
			var full []string
			if path != nil && len(key) > 0 {
				full = append(slices.Clone(path), key...)
				s.record(full, line)
			}
			s.skipSpace()
			if s.peek() == '=' {
				s.advance()
			}
			s.value(full)
			if s.pos == start {
				s.advance()
			}
		}
	}
}

// unquote decodes a quoted key; TOML and Go escapes agree on everything a
// key name is likely to contain, and the raw text is a fine fallback.
func unquote(quoted string) string {
	if u, err := strconv.Unquote(quoted); err == nil {
		return u
	}
	return strings.Trim(quoted, `"`)
}
