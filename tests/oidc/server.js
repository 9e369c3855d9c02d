// A real OpenID provider for Coffer's SSO tests (issue #30): node's oidc-provider on 127.0.0.1.
// Usage: node server.js PORT [CLIENT_SECRET]   (or OIDC_PORT / OIDC_CLIENT_SECRET in the environment)
// Confidential clients (client_secret_basic): "coffer" (Authorization Code with PKCE S256, and the device
// authorization grant of RFC 8628) and "coffer-web" (the code flow only); a `groups` claim; the provider's
// dev interactions (a login form taking any name and password, then a consent form; for the device grant,
// a user-code form and a confirmation form first).
// OIDC_PLAIN_PORT, when set, also serves a second provider there that offers no device grant at all.
// OIDC_RECORD, when set, names a file each device code issued is appended to (a test checks that Coffer
// never shows or logs one).
import { appendFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.OIDC_PORT);
const secret = process.argv[3] || process.env.OIDC_CLIENT_SECRET || 'coffer-test-secret';
const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';

// each account's groups: an account named "<name>+<group>+<group>" is in those groups
const groupsOf = (id) => id.split('+').slice(1);

function provider(at, deviceFlow) {
  const issuer = `http://127.0.0.1:${at}`;
  const client = (id, grants) => ({
    client_id: id,
    client_secret: secret,
    application_type: 'native', // loopback redirect URIs match on any port (RFC 8252 7.3)
    redirect_uris: ['http://127.0.0.1/callback', 'https://coffer.example.test/oidc/callback'],
    grant_types: grants,
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  });
  const made = new Provider(issuer, {
    clients: [
      client('coffer', deviceFlow ? ['authorization_code', DEVICE] : ['authorization_code']),
      client('coffer-web', ['authorization_code']),
    ],
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'groups'],
    claims: { openid: ['sub'], email: ['email'], groups: ['groups'] },
    conformIdTokenClaims: false, // the scopes' claims in the ID token itself
    features: { devInteractions: { enabled: true }, deviceFlow: { enabled: deviceFlow } },
    cookies: { keys: ['coffer-test-cookie-key'] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() { return { sub: id, email: `${id.split('+')[0]}@example.test`, groups: groupsOf(id) }; },
      };
    },
  });
  // RFC 8628 3.2: a provider may ask for any polling interval (5 s when it names none); this one asks for
  // 1 s, so that a test's poll waits little
  made.on('device_authorization.success', (ctx, body) => {
    body.interval = 1;
    if (process.env.OIDC_RECORD) appendFileSync(process.env.OIDC_RECORD, `${body.device_code}\n`);
  });
  made.listen(at, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
}

provider(port, true);
if (process.env.OIDC_PLAIN_PORT) provider(Number(process.env.OIDC_PLAIN_PORT), false);
