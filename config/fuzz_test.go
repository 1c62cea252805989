package config

import (
	"os"
	"testing"
)

// FuzzParse: any input gives a Config or errors with positions, never a panic, and a
// Config that parses is valid.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../config.example.toml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("[turn]\nudp = [\"0.0.0.0:3478\"]\nrelay_ports = \"1-2\"\n"))
	f.Add([]byte("realm = \"x\"\n[signal]\nlisten = \"\"\n[peers]\ndeny = [\"default\", \"10.0.0.0/8\"]\n"))
	f.Add([]byte("[auth]\nusers = { a = \"b\" }\nsecrets = [\"s\"]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz.toml")
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("parsed but invalid: %v", verr)
			}
		}
	})
}
