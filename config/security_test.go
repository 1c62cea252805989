package config

import "testing"

// TestSecurity5APITokensNeverInErrors: [signal] api_tokens are credentials like
// auth.secrets; no config error may print one, however the file gets it wrong.
func TestSecurity5APITokensNeverInErrors(t *testing.T) {
	const tok = "hunter2token"
	for _, src := range []string{
		"[signal]\napi_tokens = [\"\", \"" + tok + "\"]\n",
		"[signal]\napi_tokens = \"" + tok + "\"\n",
		"[signal]\napi_tokens = [\"" + tok + "\", 5]\n",
		"[signal]\napi_tokens = { a = \"" + tok + "\" }\n",
		"signal.api_tokens = \"" + tok + "\"\n",
		"signal = [\"" + tok + "\"]\n",
		"signal = \"" + tok + "\"\n",
		"[signal]\napi_tokens = [" + tok + "]\n",                           // syntax error quoting the text
		"signal = { api_tokens = [" + tok + "] }\n",                        // the same inside an inline table
		"[signal]\napi_tokens = [\"" + tok + "\\q\"]\n",                    // a bad escape quotes the string
		"[signal]\napi_tokens = [\n  \"" + tok + "\",\n  " + tok + "\n]\n", // a multi-line array
		"[signal]\napi_tokens = [\"" + tok + "\"\nlisten = \"x\"\n",        // an unterminated array
		"[signal]\napi_tokens = [\"" + tok + "\"]]\n",
	} {
		expectHidden(t, src, "hunter")
	}
}
