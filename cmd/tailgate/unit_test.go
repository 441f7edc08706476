package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// unitSettings reads the [Service] settings of tailgate.service.
func unitSettings(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("tailgate.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := make(map[string][]string)
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("tailgate.service: %q is not key=value", line)
			}
			settings[k] = append(settings[k], v)
		}
	}
	return settings
}

// The shipped systemd unit keeps every process tailgate starts in its
// cgroup and kills them all when it stops or dies (KillMode=control-group),
// reloads with SIGHUP, and starts tailgate with a command line it accepts.
func TestSystemdUnit(t *testing.T) {
	s := unitSettings(t)
	for k, want := range map[string]string{
		"KillMode":       "control-group",
		"KillSignal":     "SIGTERM",
		"ExecReload":     "/bin/kill -HUP $MAINPID",
		"DynamicUser":    "yes",
		"Restart":        "on-failure",
		"StateDirectory": "tailgate",
	} {
		if got := s[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %s", k, got, want)
		}
	}
	exec := strings.Fields(s["ExecStart"][0])
	if exec[0] != "/usr/local/bin/tailgate" {
		t.Errorf("ExecStart runs %s", exec[0])
	}
	args := exec[1:]
	for i, a := range args {
		if a == "-f" && i+1 < len(args) {
			args[i+1] = "../../configs/simple.yaml"
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append(args, "--validate-only"), &stdout, &stderr, nil); code != exitOK || strings.TrimSpace(stdout.String()) != "ok" {
		t.Errorf("ExecStart's flags with --validate-only: exit %d, %s%s", code, stdout.String(), stderr.String())
	}
}
