package oauth

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
)

// revoke revokes rec's tokens (its refresh token, else its access token)
// at the revocation endpoint its authorization server's metadata names.
func (c *Connector) revoke(ctx context.Context, rec *Record) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	endpoint := rec.RevocationURL
	if endpoint == "" {
		return nil // the server offered none when the connection was made
	}
	tok, hint := rec.Token.RefreshToken, "refresh_token"
	if tok == "" {
		tok, hint = rec.Token.AccessToken, "access_token"
	}
	form := url.Values{"token": {tok}, "token_type_hint": {hint}}
	basic := rec.ClientSecret != "" && rec.AuthStyle != oauth2.AuthStyleInParams
	if !basic {
		form.Set("client_id", rec.ClientID)
		if rec.ClientSecret != "" {
			form.Set("client_secret", rec.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(rec.ClientID), url.QueryEscape(rec.ClientSecret))
	}
	resp, err := c.opts.Client.Do(req)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("revoke: the authorization server answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// authServer is the metadata of resource's authorization server, found
// from its protected resource metadata (at prmURL, the challenge's, else
// the well-known URLs).
func (c *Connector) authServer(ctx context.Context, resource, prmURL string) (*oauthex.AuthServerMeta, error) {
	ru, err := url.Parse(resource)
	if err != nil {
		return nil, err
	}
	var urls []string
	if prmURL != "" {
		urls = append(urls, prmURL)
	}
	for _, path := range []string{"/.well-known/oauth-protected-resource/" + strings.TrimLeft(ru.Path, "/"), "/.well-known/oauth-protected-resource"} {
		mu := *ru
		mu.Path, mu.RawQuery = path, ""
		urls = append(urls, mu.String())
	}
	var prm *oauthex.ProtectedResourceMetadata
	for _, u := range urls {
		if prm, err = oauthex.GetProtectedResourceMetadata(ctx, u, resource, c.opts.Client); err == nil && prm != nil && len(prm.AuthorizationServers) > 0 {
			break
		}
	}
	if prm == nil || len(prm.AuthorizationServers) == 0 {
		return nil, fmt.Errorf("the protected resource metadata of %s cannot be read", resource)
	}
	asm, err := auth.GetAuthServerMetadata(ctx, prm.AuthorizationServers[0], c.opts.Client)
	if err != nil {
		return nil, err
	}
	if asm == nil {
		return nil, fmt.Errorf("authorization server %s publishes no metadata", prm.AuthorizationServers[0])
	}
	return asm, nil
}

// safeEndpoint reports whether u may receive a token or a client's
// secret: https, or http to this host's loopback (a server under test)
// or to a host on the tailnet (WireGuard encrypts it).
func (c *Connector) safeEndpoint(u string) bool {
	pu, err := url.Parse(u)
	if err != nil || pu.Host == "" {
		return false
	}
	if pu.Scheme == "https" {
		return true
	}
	host := pu.Hostname()
	ip := net.ParseIP(host)
	return pu.Scheme == "http" && (host == "localhost" || ip != nil && ip.IsLoopback() || c.opts.TailnetHost != nil && c.opts.TailnetHost(host))
}
