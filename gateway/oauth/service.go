package oauth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// A target configured for a service identity (Options.ClientCredentials)
// is called by tailgate as itself: one token, from the client
// credentials grant with the pre-registered client, for every caller;
// nobody connects, and no token is stored (it is asked for again after a
// restart).

// serviceToken is the service's access token; "" until the target's
// first refusal has told where to ask for one.
func (c *Connector) serviceToken() (string, error) {
	c.mu.Lock()
	ts := c.service
	c.mu.Unlock()
	if ts == nil {
		return "", nil
	}
	tok, err := ts.Token()
	if err != nil {
		c.mu.Lock()
		c.service = nil
		c.mu.Unlock()
		return "", fmt.Errorf("target %q: client credentials: %s", c.opts.Target, redactErr(err))
	}
	return tok.AccessToken, nil
}

// serviceUnauthorized finds the token endpoint from the target's
// refusal and makes the service's token source: nil means try again.
func (c *Connector) serviceUnauthorized(ctx context.Context, resp *http.Response) error {
	challenges, _ := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
	var prmURL string
	scopes := slices.Clone(c.opts.Scopes)
	for _, ch := range challenges {
		if u := ch.Params["resource_metadata"]; u != "" && prmURL == "" {
			prmURL = u
		}
		if s := ch.Params["scope"]; s != "" && len(scopes) == 0 {
			scopes = splitScopes(s)
		}
	}
	var asm *oauthex.AuthServerMeta
	var err error
	if c.opts.Issuer != "" {
		// The client's own server, never one the target names.
		if asm, err = auth.GetAuthServerMetadata(ctx, c.opts.Issuer, c.opts.Client); err == nil && asm == nil {
			err = fmt.Errorf("authorization server %s publishes no metadata", c.opts.Issuer)
		}
	} else {
		asm, err = c.authServer(ctx, c.opts.Resource, prmURL)
	}
	if err != nil {
		c.opts.Log.Warn("oauth: client credentials: no authorization server", "target", c.opts.Target, "err", redactErr(err))
		return fmt.Errorf("target %q: tailgate could not find its authorization server (the gateway's log says why)", c.opts.Target)
	}
	if !c.safeEndpoint(asm.TokenEndpoint) {
		return fmt.Errorf("target %q: token endpoint %s is neither https nor on this host or the tailnet", c.opts.Target, asm.TokenEndpoint)
	}
	style := oauth2.AuthStyleInHeader
	if slices.Contains(asm.TokenEndpointAuthMethodsSupported, "client_secret_post") && !slices.Contains(asm.TokenEndpointAuthMethodsSupported, "client_secret_basic") {
		style = oauth2.AuthStyleInParams
	}
	cfg := &clientcredentials.Config{
		ClientID: c.opts.ClientID, ClientSecret: c.opts.ClientSecret, TokenURL: asm.TokenEndpoint,
		Scopes: scopes, EndpointParams: url.Values{"resource": {c.opts.Resource}}, AuthStyle: style,
	}
	ts := cfg.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, c.opts.Client))
	if _, err := ts.Token(); err != nil {
		return fmt.Errorf("target %q: client credentials: %s", c.opts.Target, redactErr(err))
	}
	c.mu.Lock()
	c.service = ts
	c.mu.Unlock()
	c.opts.Log.Info("oauth: service token obtained", "target", c.opts.Target, "token_endpoint", asm.TokenEndpoint)
	return nil
}

func splitScopes(s string) []string { return strings.Fields(s) }
