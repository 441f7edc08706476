// Package idtoken is tailgate's signed caller identity: a short-lived JWT
// that tells a remote target who is calling through the gateway, which the
// target can check without trusting the network between them.
//
// tailgate knows each caller from Tailscale WhoIs (a [tsnode.Identity]).
// Headers such as X-Tailscale-User carry that knowledge only as far as
// the network is trusted: any client that can reach the target directly
// can forge them. Instead, for each caller and target the gateway mints a
// token ([Signer.Mint], or [Signer.Token] with a cache) whose
//
//   - iss is the gateway's tailnet URL (Options.Issuer),
//   - sub is the caller's login, or for a tagged node its MagicDNS name,
//   - aud is the one target it is meant for, so a target cannot replay it
//     at another,
//   - exp, nbf and iat bound it to a few minutes, jti names it,
//   - node, tags and caps carry the caller's node, tags and grants.
//
// The gateway serves the public keys as a JWKS at [JWKSPath] and an
// OpenID-style discovery document at [DiscoveryPath] ([Signer.Handler]). A
// target written with the MCP go-sdk checks the token with
// auth.RequireBearerToken and [Verifier]; targets in other languages use
// any JWT library with the JWKS.
//
// Keys are EdDSA (Ed25519) by default, ES256 as an option. They live in
// one file in the state directory, are made on first start, survive
// restarts and rotate on a schedule ([Signer.Run]) with overlap: the key
// that will sign next is published a full rotation period before it signs,
// and a retired key stays published until every token it signed has
// expired, so verifiers that cache the JWKS never see an unknown key.
package idtoken
