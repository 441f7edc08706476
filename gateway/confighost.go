package gateway

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tailgate-dev/tailgate/mcpstdio"
)

// This file holds what the config names on the host: programs and files
// resolved against the config file's folder, certificates, and
// HostWarnings, the checks that only the host can make (programs, users,
// the auth key file).

// resolveCommand is cmd with a relative path (one that holds a "/")
// made absolute against dir; names ("npx") are left to PATH.
func resolveCommand(dir, cmd string) string {
	if filepath.IsAbs(cmd) || !strings.ContainsRune(cmd, '/') {
		return cmd
	}
	return filepath.Join(dir, cmd)
}

// resolvePath is a file path of the config (a header's file, a caFile)
// made absolute against the config file's folder, as a relative stdio cmd
// is.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// checkPEM reports whether file holds a PEM certificate.
func checkPEM(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return unwrapPathError(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return errors.New("no PEM certificate in it")
	}
	return nil
}

// HostWarnings are what this host lacks for the config: a stdio target's
// program that is not found (in PATH, or at its path) or not executable, a
// stdio.user that this process cannot start children as, and a
// tailscale.authKeyFile that cannot be read. The config is valid
// without them — a program may be installed later — so they are
// warnings, each located as a ConfigError is.
func (c *Config) HostWarnings() []*ConfigError {
	var ws []*ConfigError
	for _, ref := range c.commands {
		if _, err := exec.LookPath(ref.value); err != nil {
			msg := fmt.Sprintf("%s: not found in PATH", ref.value)
			if strings.ContainsRune(ref.value, '/') {
				msg = fmt.Sprintf("%s: %v", ref.value, unwrapPathError(err))
			}
			ws = append(ws, &ConfigError{File: c.File, Line: ref.line, Path: ref.path, Msg: msg})
		}
	}
	for _, ref := range c.users {
		if _, err := childUser(ref.value); err != nil {
			ws = append(ws, &ConfigError{File: c.File, Line: ref.line, Path: ref.path, Msg: err.Error()})
		}
	}
	if f := c.Tailscale.AuthKeyFile; f != "" && c.Tailscale.Mode != "host" {
		if _, err := os.ReadFile(f); err != nil {
			ws = append(ws, &ConfigError{File: c.File, Line: c.authKeyLine, Path: "tailscale.authKeyFile", Msg: fmt.Sprintf("cannot read the auth key: %v", unwrapPathError(err))})
		}
	}
	return ws
}

// childUser is the account name (a stdio.user) stands for, if this
// process can start children as it.
func childUser(name string) (*mcpstdio.User, error) {
	u, err := mcpstdio.LookupUser(name)
	if err != nil {
		return nil, fmt.Errorf("stdio.user %q: %w", name, err)
	}
	if err := u.Allowed(); err != nil {
		return nil, err
	}
	return u, nil
}

// unwrapPathError drops the operation and path that a message already
// names ("open /x: no such file" → "no such file").
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}
