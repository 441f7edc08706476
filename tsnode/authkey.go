package tsnode

import (
	"fmt"
	"os"
	"strings"
)

// SecretEnv returns the environment variables through which tsnet reads
// credentials. No child process may inherit them.
func SecretEnv() []string {
	return []string{"TS_AUTHKEY", "TS_AUTH_KEY", "TS_CLIENT_SECRET", "TS_ID_TOKEN"}
}

// AuthKey finds the node's auth key: the contents of file if given, else
// TS_AUTHKEY, else TS_AUTH_KEY. from says where it came from, for logs;
// the key itself must never be logged. No key is not an error.
func AuthKey(file string) (key, from string, err error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", fmt.Errorf("tailnet: auth key file: %w", err)
		}
		key = strings.TrimSpace(string(b))
		if key == "" {
			return "", "", fmt.Errorf("tailnet: auth key file %s is empty", file)
		}
		return key, "file " + file, nil
	}
	for _, name := range []string{"TS_AUTHKEY", "TS_AUTH_KEY"} {
		if v := strings.TrimSpace(os.Getenv(name)); v != "" {
			return v, "$" + name, nil
		}
	}
	return "", "", nil
}
