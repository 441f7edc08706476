package gateway

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// IdentifyTailnet is the IdentifyFunc of a tailnet node: resolve (e.g.
// tsnode.Node.Identify) says who the peer is; a peer it cannot resolve is
// refused.
func IdentifyTailnet(resolve func(context.Context, netip.AddrPort) (*tsnode.Identity, error)) IdentifyFunc {
	return func(ctx context.Context, remote netip.AddrPort) (*policy.Source, error) {
		id, err := resolve(ctx, remote)
		if err != nil {
			return nil, err
		}
		src, _ := addressOnly(ctx, remote)
		src.Tailscale = tailscaleSource(id)
		return src, nil
	}
}

// tailscaleSource is CEL's source.tailscale for id. Capability values that
// are not valid JSON (control servers send JSON; this is defence) are
// passed as strings.
func tailscaleSource(id *tsnode.Identity) *policy.Tailscale {
	caps := make(map[string][]any, len(id.Caps))
	for name, raws := range id.Caps {
		vals := make([]any, 0, len(raws))
		for _, raw := range raws {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				v = string(raw)
			}
			vals = append(vals, v)
		}
		caps[name] = vals
	}
	return &policy.Tailscale{
		Node: policy.Node{
			Name:     id.NodeName,
			Hostname: id.NodeHostname,
			ID:       id.NodeID,
			Tags:     append([]string{}, id.Tags...),
			OS:       id.NodeOS,
		},
		User: policy.User{Login: id.UserLogin, DisplayName: id.UserDisplayName},
		Caps: policy.NewCaps(caps),
	}
}

// identityEnv is the caller's identity as the environment of a child of a
// target with stdio.identityEnv. Only what WhoIs said goes in: nothing the
// client sent can change it.
func identityEnv(src *policy.Source) map[string]string {
	env := map[string]string{"TAILGATE_PEER_IP": src.Address}
	if ts := src.Tailscale; ts != nil {
		env["TAILGATE_USER_LOGIN"] = ts.User.Login
		env["TAILGATE_USER_NAME"] = ts.User.DisplayName
		env["TAILGATE_NODE_NAME"] = ts.Node.Name
		env["TAILGATE_NODE_HOSTNAME"] = ts.Node.Hostname
		env["TAILGATE_NODE_ID"] = ts.Node.ID
		env["TAILGATE_NODE_OS"] = ts.Node.OS
		env["TAILGATE_NODE_TAGS"] = strings.Join(ts.Node.Tags, ",")
	}
	return env
}

// requestInput is CEL's request for an HTTP request's method, path, host
// and headers (lower-case names, values joined with ",").
func requestInput(method, path, host string, header map[string][]string) *policy.Request {
	h := make(map[string]string, len(header))
	for k, v := range header {
		h[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return &policy.Request{Method: method, Path: path, Host: host, Headers: h}
}
