package idtoken

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Claims is the claim set of an identity token: the registered claims
// (iss, sub, aud, exp, nbf, iat, jti) and the caller's node, tags and
// grants as tailgate saw them through WhoIs.
//
// Subject is the caller's login (e.g. "alice@example.com"), except for a
// tagged node, which has no user of its own (WhoIs says "tagged-devices"
// for every one): its subject is the node's MagicDNS name (e.g.
// "ci-runner.example.ts.net"). A target tells the two apart by Tags,
// which are never empty for a tagged node.
type Claims struct {
	jwt.Claims
	// Node is the caller's node.
	Node Node `json:"node"`
	// Tags are the caller node's ACL tags, empty for a user's node.
	Tags []string `json:"tags"`
	// Caps are the app capabilities that grants give the caller towards
	// the gateway, each with the JSON values of the grants that give it.
	Caps map[string][]json.RawMessage `json:"caps"`
}

// Node is the caller's tailnet node in a token.
type Node struct {
	// Name is the node's MagicDNS name without the trailing dot.
	Name string `json:"name"`
	// ID is the node's stable ID.
	ID string `json:"id"`
}

// identityClaims are the claims of a token for id that do not depend on
// the time or the target: subject, node, tags and grants. Capability
// values that are not valid JSON (control servers send JSON; this is
// defence) become JSON strings, so a token can always be encoded.
func identityClaims(id *tsnode.Identity) (Claims, error) {
	if id == nil {
		return Claims{}, errors.New("idtoken: no caller identity")
	}
	var c Claims
	c.Subject = subject(id)
	if c.Subject == "" {
		return Claims{}, fmt.Errorf("idtoken: caller on node %q has no login and no node name to name it by", id.NodeID)
	}
	c.Node = Node{Name: id.NodeName, ID: id.NodeID}
	c.Tags = append([]string{}, id.Tags...)
	c.Caps = make(map[string][]json.RawMessage, len(id.Caps))
	for name, raws := range id.Caps {
		vals := make([]json.RawMessage, len(raws))
		for i, raw := range raws {
			if json.Valid(raw) {
				vals[i] = raw
			} else {
				vals[i], _ = json.Marshal(string(raw))
			}
		}
		c.Caps[name] = vals
	}
	return c, nil
}

// taggedLogin is the login WhoIs gives every tagged node on Tailscale and
// headscale: it names no one.
const taggedLogin = "tagged-devices"

// subject is the token subject for id: the login, or for a tagged node
// (one with tags, or whose login is "tagged-devices") the node's MagicDNS
// name, since its login names no one.
func subject(id *tsnode.Identity) string {
	if len(id.Tags) > 0 || id.UserLogin == taggedLogin {
		return id.NodeName
	}
	return id.UserLogin
}

// ClaimsFrom returns the claims of the identity token that [Verifier]
// accepted for info, as a target's tool handler finds it in
// req.Extra.TokenInfo: the token of that request. (In a go-sdk session
// auth.TokenInfoFromContext of a handler's context is the token of the
// session's first request, which names the same caller but may be older.)
func ClaimsFrom(info *auth.TokenInfo) (*Claims, error) {
	if info == nil || info.Extra == nil {
		return nil, errors.New("idtoken: no identity token claims")
	}
	data, err := json.Marshal(info.Extra)
	if err != nil {
		return nil, fmt.Errorf("idtoken: claims: %w", err)
	}
	var c Claims
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("idtoken: claims: %w", err)
	}
	return &c, nil
}
