// A real OAuth 2.1 authorization server for tailgate's connectors test
// (integration/connectors_browser_test.go): oidc-provider on
// 127.0.0.1:<free port>, for the one protected resource named in argv[2]
// (the test's MCP server). It registers clients dynamically, requires
// PKCE, issues JWT access tokens for that resource (aud = the resource,
// typ at+jwt) that live argv[3] seconds, rotating refresh tokens
// (offline_access), and revokes them (RFC 7009). Its sign-in and consent
// pages are oidc-provider's development pages (devInteractions), which a
// browser fills: any login with any password is an account whose sub is
// that login.
//
// It prints one JSON object per line on stdout: {"issuer": …} once it
// listens, then {"event": …} for what the test waits on (a client
// registered, a grant by authorization code or refresh token, a token
// revoked), never a token. It exits when its stdin closes (the test
// ended).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import Provider, { errors } from "oidc-provider";

const resource = process.argv[2];
const accessTokenTTL = Number(process.argv[3] || 15);
if (!resource) {
  console.error("usage: node oidc.mjs <resource URL> [access token TTL in seconds]");
  process.exit(2);
}
const resourceScope = "mcp:tools";

// out writes one JSON line for the test.
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

// A signing key of this run's own: oidc-provider's built-in development
// keys are public.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: randomBytes(8).toString("hex"), use: "sig", alg: "RS256" };

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  // Any login is an account; its sub is the login typed on the sign-in page.
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  scopes: ["openid", "offline_access", resourceScope],
  pkce: { required: () => true },
  // A refresh token for every client registered for the refresh_token
  // grant. oidc-provider's default issues one only for offline_access,
  // which it grants (as OpenID Connect Core says) only with prompt=consent
  // in the authorization request; MCP clients ask for offline_access
  // without it (go-sdk, and so tailgate).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTokenTTL,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 600,
    Session: 3600,
    RefreshToken: 3600,
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== resource) {
          throw new errors.InvalidTarget(`unknown resource ${indicator}`);
        }
        return {
          scope: resourceScope,
          audience: resource,
          accessTokenTTL,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        };
      },
    },
  },
});

provider.on("registration_create.success", (_ctx, client) => out({ event: "registered", client_id: client.clientId }));
provider.on("grant.success", (ctx) => {
  const p = ctx.oidc.params;
  out({ event: "grant", grant_type: p.grant_type, resource: p.resource ?? null, account: ctx.oidc.account?.accountId ?? null });
});
provider.on("grant.error", (ctx, err) => out({ event: "grant.error", grant_type: ctx.oidc.params?.grant_type, error: err.message }));
provider.on("refresh_token.destroyed", (token) => out({ event: "refresh_token.destroyed", account: token.accountId }));
provider.on("grant.revoked", (_ctx, grantId) => out({ event: "grant.revoked", grant: grantId }));
provider.on("server_error", (_ctx, err) => out({ event: "server_error", error: String(err?.stack ?? err) }));
// Every request to the revocation endpoint, with what it answered.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === "/token/revocation") {
    out({ event: "revocation", status: ctx.status, token_type_hint: ctx.oidc?.params?.token_type_hint ?? null });
  }
});

server.on("request", provider.callback());
out({ issuer });

process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
