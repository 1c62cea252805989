package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// The document is decoded into a generic map and then read key by key,
// rather than unmarshalled into structs, for three reasons: struct
// decoding stops at the first bad value while we report them all; it
// matches field names case-insensitively, which would quietly accept
// "UDP" for "udp"; and MetaData.Undecoded would then miss such keys. Here
// every key the code asks for is consumed from the map, so whatever is
// left over afterwards is exactly the set of unknown keys.

// decoder collects problems while a document is read into a Config.
type decoder struct {
	loc      locator
	errs     Errors
	tables   []*table
	known    map[string][]string // parent key -> names read from it, in order
	sections map[string]bool     // top-level names that are sections
}

func newDecoder(loc locator) *decoder {
	return &decoder{loc: loc, known: map[string][]string{}, sections: map[string]bool{}}
}

func (d *decoder) decodeConfig(c *Config, doc map[string]any) {
	c.decode(d.newTable(nil, doc))
	d.reportUnknown()
}

func (d *decoder) newTable(path []string, m map[string]any) *table {
	t := &table{d: d, path: path, m: m}
	d.tables = append(d.tables, t)
	return t
}

func (d *decoder) add(e *Error) { d.errs = append(d.errs, e) }

// table reads the keys of one TOML table. Reading a key removes it, so
// what remains at the end is unknown.
type table struct {
	d    *decoder
	path []string
	m    map[string]any
}

func (t *table) child(name string) []string {
	return append(slices.Clone(t.path), name)
}

// take consumes name and records it as a known key, for did-you-mean.
func (t *table) take(name string) (key string, v any, ok bool) {
	parent := keyString(t.path)
	t.d.known[parent] = append(t.d.known[parent], name)
	v, ok = t.m[name]
	delete(t.m, name)
	return keyString(t.child(name)), v, ok
}

func (t *table) typeError(key string, v any, want string) {
	t.d.add(t.d.loc.errorf(key, v, "expected %s, found %s", want, typeName(v)))
}

// section returns the sub-table name, empty if absent.
func (t *table) section(name string) *table {
	if len(t.path) == 0 {
		t.d.sections[name] = true
	}
	key, v, ok := t.take(name)
	m := map[string]any{}
	if ok {
		if sub, isTable := v.(map[string]any); isTable {
			m = sub
		} else {
			t.d.add(t.d.loc.errorf(key, v, "expected a table, found %s: write [%s] on a line of its own, followed by its keys", typeName(v), key))
		}
	}
	return t.d.newTable(t.child(name), m)
}

func (t *table) str(name, want string, dst *string) {
	key, v, ok := t.take(name)
	if !ok {
		return
	}
	s, isString := v.(string)
	if !isString {
		t.typeError(key, v, want)
		return
	}
	*dst = s
}

// parse reads a string and converts it with fn, which must leave its
// target alone on failure so the default stays. fn's own error text is not
// shown: want already says what is accepted, more helpfully.
func (t *table) parse(name, want string, fn func(string) error) {
	key, v, ok := t.take(name)
	if !ok {
		return
	}
	s, isString := v.(string)
	if !isString {
		t.typeError(key, v, want)
		return
	}
	if err := fn(s); err != nil {
		t.d.add(t.d.loc.errorf(key, s, "expected %s", want))
	}
}

func (t *table) strs(name, want string, dst *[]string) {
	key, v, ok := t.take(name)
	if !ok {
		return
	}
	arr, isArray := v.([]any)
	if !isArray {
		t.typeError(key, v, want)
		return
	}
	out := make([]string, 0, len(arr))
	for i, x := range arr {
		s, isString := x.(string)
		if !isString {
			t.d.add(t.d.loc.errorf(key, v, "expected %s, but element %d is %s", want, i+1, typeName(x)))
			return
		}
		out = append(out, s)
	}
	*dst = out
}

func (t *table) integer(name, want string, dst *int) {
	key, v, ok := t.take(name)
	if !ok {
		return
	}
	n, isInt := v.(int64)
	if !isInt {
		t.typeError(key, v, want)
		return
	}
	if int64(int(n)) != n {
		t.d.add(t.d.loc.errorf(key, v, "expected %s", want))
		return
	}
	*dst = int(n)
}

// duration reads a string such as "5s" into a time.Duration.
func (t *table) duration(name, want string, dst *time.Duration) {
	t.parse(name, want, func(v string) error {
		d, err := time.ParseDuration(v)
		if err == nil {
			*dst = d
		}
		return err
	})
}

func (t *table) boolean(name, want string, dst *bool) {
	key, v, ok := t.take(name)
	if !ok {
		return
	}
	b, isBool := v.(bool)
	if !isBool {
		t.typeError(key, v, want)
		return
	}
	*dst = b
}

// strMap reads a table of free-form names to strings. Its entries are all
// consumed, so no name in it is ever reported as unknown.
func (t *table) strMap(name, want, entryWant string, dst *map[string]string) {
	key, v, ok := t.take(name)
	if !ok {
		return
	}
	m, isTable := v.(map[string]any)
	if !isTable {
		t.typeError(key, v, want)
		return
	}
	out := make(map[string]string, len(m))
	for _, entry := range slices.Sorted(maps.Keys(m)) {
		s, isString := m[entry].(string)
		if !isString {
			ekey := keyString(append(t.child(name), entry))
			t.typeError(ekey, m[entry], entryWant)
			continue
		}
		out[entry] = s
	}
	*dst = out
}

// reportUnknown turns the keys no decode method asked for into errors,
// suggesting the nearest known key.
func (d *decoder) reportUnknown() {
	for _, t := range d.tables {
		for _, name := range slices.Sorted(maps.Keys(t.m)) {
			key := keyString(t.child(name))
			_, isTable := t.m[name].(map[string]any)
			if len(t.path) == 0 && isTable {
				d.add(d.loc.errorf(key, nil, "unknown section [%s]: %s", key, d.hint(t, name)))
			} else {
				d.add(d.loc.errorf(key, nil, "unknown key %q: %s", key, d.hint(t, name)))
			}
		}
	}
}

// hint tells the user what they probably meant by the unknown key name in t.
func (d *decoder) hint(t *table, name string) string {
	parent := keyString(t.path)
	if s := closest(name, d.known[parent]); s != "" {
		if len(t.path) == 0 && d.sections[s] {
			return fmt.Sprintf("did you mean [%s]?", s)
		}
		return fmt.Sprintf("did you mean %q?", keyString(t.child(s)))
	}
	// The right key in the wrong place, e.g. max_ttl under [turn].
	for _, other := range slices.Sorted(maps.Keys(d.known)) {
		if other == parent || !slices.Contains(d.known[other], name) || d.sections[name] {
			continue
		}
		if other == "" {
			return fmt.Sprintf("%q is a top-level key: move it above the first [section]", name)
		}
		return fmt.Sprintf("did you mean %q? move it to the [%s] section", other+"."+name, other)
	}
	if len(t.path) == 0 {
		var keys, sections []string
		for _, k := range d.known[""] {
			if d.sections[k] {
				sections = append(sections, "["+k+"]")
			} else {
				keys = append(keys, k)
			}
		}
		return fmt.Sprintf("the top-level keys are %s and the sections are %s",
			strings.Join(keys, ", "), strings.Join(sections, ", "))
	}
	return fmt.Sprintf("the keys in [%s] are %s", parent, strings.Join(d.known[parent], ", "))
}
