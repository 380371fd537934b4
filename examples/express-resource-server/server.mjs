// An Express API that accepts tokenpush access tokens.
//
// jose's createRemoteJWKSet caches the JWKS and refetches it when a token names an unknown
// `kid` (after `tokenpush keys rotate`), with a cooldown so garbage tokens cannot make it
// hammer tokenpush. jwtVerify checks the signature with the algorithm pinned, `typ: at+jwt`,
// `iss`, `aud` and `exp`. The issuer and JWKS URL come from tokenpush's discovery document.
//
//   TOKENPUSH=http://127.0.0.1:8080 PORT=3002 node server.mjs
//   curl -H "Authorization: Bearer $ACCESS" http://127.0.0.1:3002/hello
//
// A JWT stays valid until `exp` even after its session is revoked (this API never asks
// tokenpush per request): keep tokenpush's --access-ttl short; it pushes new tokens before
// expiry, so connected clients never notice.
import express from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';

/** Builds the app for a tokenpush at `base`. */
export async function createApp(base, audience = 'tokenpush') {
  const res = await fetch(new URL('/.well-known/openid-configuration', base));
  if (!res.ok) throw new Error(`discovery failed: ${res.status}`);
  const { issuer, jwks_uri: jwksUri } = await res.json();
  const jwks = createRemoteJWKSet(new URL(jwksUri), { cooldownDuration: 10_000 });

  async function requireToken(req, res, next) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.get('authorization') ?? '');
    if (!m) return refuse(res, 'no access token');
    try {
      const { payload } = await jwtVerify(m[1], jwks, {
        issuer,
        audience,
        typ: 'at+jwt',
        algorithms: ['EdDSA', 'ES256', 'RS256'],
        requiredClaims: ['exp', 'iat', 'sub'],
        clockTolerance: 2,
      });
      req.claims = payload;
      next();
    } catch {
      refuse(res, 'invalid or expired token');
    }
  }

  function refuse(res, why) {
    res
      .status(401)
      .set('WWW-Authenticate', `Bearer error="invalid_token", error_description="${why}"`)
      .json({ error: 'invalid_token', error_description: why });
  }

  const app = express();
  app.get('/healthz', (_req, res) => res.send('ok'));
  app.get('/hello', requireToken, (req, res) => {
    const c = req.claims;
    res.json({ hello: c.name, sub: c.sub, session_id: c.sid, roles: c.roles, exp: c.exp, ext: c.ext ?? null });
  });
  return app;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const app = await createApp(process.env.TOKENPUSH ?? 'http://127.0.0.1:8080');
  const port = Number(process.env.PORT ?? 3002);
  const server = app.listen(port, '127.0.0.1', () => {
    console.log(`resource server listening on http://127.0.0.1:${server.address().port}`);
  });
}
