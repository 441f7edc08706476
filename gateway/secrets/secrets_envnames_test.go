package secrets

import (
	"slices"
	"testing"
)

func TestEnvNames(t *testing.T) {
	environ := []string{"GITHUB_TOKEN_ALICE=a", "GITHUB_TOKEN_BOB=b", "GITHUB_TOKEN_=x", "GITHUB=y", "OAUTH_KEY=k", "HOME=/root"}
	for _, tc := range []struct {
		ref  Ref
		want []string
	}{
		{Ref{Env: "GITHUB_TOKEN_{user}"}, []string{"GITHUB_TOKEN_ALICE", "GITHUB_TOKEN_BOB"}},
		{Ref{Env: "OAUTH_KEY"}, []string{"OAUTH_KEY"}},
		{Ref{File: "/run/{login}"}, nil},
	} {
		if got := tc.ref.EnvNames(environ); !slices.Equal(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.ref, got, tc.want)
		}
	}
}
