package secrets_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/tailgate-dev/tailgate/gateway/secrets"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// A per-caller secret from the gateway's environment: alice has one, bob
// has none, and a tagged node cannot be named by {user}.
func Example() {
	env := map[string]string{"GITHUB_TOKEN_ALICE": "ghp_alice"}
	r := secrets.New(secrets.Options{LookupEnv: func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}})
	ref := secrets.Ref{Env: "GITHUB_TOKEN_{user}"}
	if err := ref.Validate(); err != nil {
		panic(err)
	}
	ctx := context.Background()

	alice := &tsnode.Identity{NodeName: "laptop.tail1234.ts.net", NodeID: "n1", UserLogin: "alice@example.com"}
	v, err := r.Resolve(ctx, ref, alice)
	fmt.Println(v, err)

	bob := &tsnode.Identity{NodeName: "desktop.tail1234.ts.net", NodeID: "n2", UserLogin: "bob@example.com"}
	_, err = r.Resolve(ctx, ref, bob)
	fmt.Println(errors.Is(err, secrets.ErrMissing), err)

	ci := &tsnode.Identity{NodeName: "ci.tail1234.ts.net", NodeID: "n3", UserLogin: "tagged-devices", Tags: []string{"tag:ci"}}
	_, err = r.Resolve(ctx, ref, ci)
	fmt.Println(errors.Is(err, secrets.ErrMissing), err)

	fmt.Println(secrets.Ref{File: "/run/credentials/github/{email}"}.Validate())
	// Output:
	// ghp_alice <nil>
	// true no secret for bob@example.com: env GITHUB_TOKEN_BOB is not set
	// false env GITHUB_TOKEN_{user}: {user}: the caller node ci.tail1234.ts.net (tag:ci) is a tagged node, and all tagged nodes share the login "tagged-devices"; name a tagged caller's secret by {node} or {nodeID}
	// file template "/run/credentials/github/{email}": unknown variable {email}; known variables are {login}, {user}, {node}, {nodeID}
}
