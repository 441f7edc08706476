package oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	endpoint, err := c.revocationEndpoint(ctx, rec)
	if err != nil || endpoint == "" {
		return err
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

// revocationEndpoint is the revocation endpoint of rec's resource's
// authorization server; "" if it offers none.
func (c *Connector) revocationEndpoint(ctx context.Context, rec *Record) (string, error) {
	ru, err := url.Parse(rec.Resource)
	if err != nil {
		return "", err
	}
	var prm *oauthex.ProtectedResourceMetadata
	for _, path := range []string{"/.well-known/oauth-protected-resource/" + strings.TrimLeft(ru.Path, "/"), "/.well-known/oauth-protected-resource"} {
		mu := *ru
		mu.Path, mu.RawQuery = path, ""
		if prm, err = oauthex.GetProtectedResourceMetadata(ctx, mu.String(), rec.Resource, c.opts.Client); err == nil && prm != nil && len(prm.AuthorizationServers) > 0 {
			break
		}
	}
	if prm == nil || len(prm.AuthorizationServers) == 0 {
		return "", errors.New("revoke: the target's protected resource metadata cannot be read")
	}
	asm, err := auth.GetAuthServerMetadata(ctx, prm.AuthorizationServers[0], c.opts.Client)
	if err != nil || asm == nil {
		return "", err
	}
	return asm.RevocationEndpoint, nil
}
