// A real OpenID provider for Coffer's SSO tests (issue #30): node's oidc-provider on 127.0.0.1.
// Usage: node server.js PORT [CLIENT_SECRET]   (or OIDC_PORT / OIDC_CLIENT_SECRET in the environment)
// One confidential client "coffer" (client_secret_basic), PKCE required (S256), a `groups` claim, the
// provider's dev interactions (a login form taking any name and password, then a consent form).
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT);
const secret = process.argv[3] || process.env.OIDC_CLIENT_SECRET || 'coffer-test-secret';
const issuer = `http://127.0.0.1:${port}`;

// each account's groups: an account named "<name>+<group>+<group>" is in those groups
const groupsOf = (id) => id.split('+').slice(1);

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'coffer',
    client_secret: secret,
    application_type: 'native', // loopback redirect URIs match on any port (RFC 8252 7.3)
    redirect_uris: ['http://127.0.0.1/callback', 'https://coffer.example.test/oidc/callback'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'groups'],
  claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
  conformIdTokenClaims: false, // the scopes' claims in the ID token itself
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['coffer-test-cookie-key'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() { return { sub: id, email: `${id.split('+')[0]}@example.test`, groups: groupsOf(id) }; },
    };
  },
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
