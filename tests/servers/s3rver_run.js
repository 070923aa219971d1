'use strict';
// s3rver_run.js - s3rver (npm, 3.7.1) for the s3 tests, on 127.0.0.1 and a port given (0 =
// any), with a data directory and buckets created at start, announcing "LISTENING <port>" on
// stdout once it accepts connections.
//
// s3rver 3.7.1 only checks that a SigV4 request's access key id exists ("V4 signatures have
// incomplete support": the signature itself is not verified). This script adds what it lacks,
// so that a wrong secret or a bad canonicalisation fails as on S3:
//   - the key pair S3RVER_ACCESS_KEY_ID / S3RVER_SECRET_ACCESS_KEY (environment, so the secret
//     is not on a command line) is registered beside s3rver's dummy one;
//   - every request with a SigV4 Authorization header is verified (canonical request, string
//     to sign, derived key: AWS's documented algorithm, with node's crypto) and refused with
//     SignatureDoesNotMatch when it differs, AuthorizationHeaderMalformed when the credential
//     names another region than --region (default us-east-1);
//   - with --require-auth, unsigned reads (GET, HEAD) are refused with AccessDenied.
// Unsigned writes are always allowed: the tests upload their objects that way.
// Usage: node s3rver_run.js --dir D [--port P] [--bucket B]... [--region R] [--require-auth]
const crypto = require('crypto');
const path = require('path');
const modules = path.join(__dirname, 'node_modules');
const S3rver = require(path.join(modules, 's3rver'));
const AWSAccount = require(path.join(modules, 's3rver', 'lib', 'models', 'account'));
const S3Error = require(path.join(modules, 's3rver', 'lib', 'models', 'error'));

const args = process.argv.slice(2);
let dir = null, port = 0, region = 'us-east-1', requireAuth = false;
const buckets = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--dir') dir = args[++i];
  else if (a === '--port') port = Number(args[++i]);
  else if (a === '--bucket') buckets.push({ name: args[++i], configs: [] });
  else if (a === '--region') region = args[++i];
  else if (a === '--require-auth') requireAuth = true;
  else { console.error('s3rver_run: unknown argument ' + a); process.exit(2); }
}
if (!dir) { console.error('s3rver_run: --dir is required'); process.exit(2); }
const keyId = process.env.S3RVER_ACCESS_KEY_ID;
const secret = process.env.S3RVER_SECRET_ACCESS_KEY;
if (keyId && secret) AWSAccount.DUMMY_ACCOUNT.createKeyPair(keyId, secret);

const hmac = (key, s) => crypto.createHmac('sha256', key).update(s, 'utf8').digest();
const sha256 = s => crypto.createHash('sha256').update(s, 'utf8').digest('hex');
// RFC 3986 unreserved characters kept, everything else %XX (uppercase), as SigV4 says.
const enc = s => encodeURIComponent(s).replace(/[!'()*]/g, c =>
  '%' + c.charCodeAt(0).toString(16).toUpperCase());

function verify(ctx) {
  const auth = ctx.get('authorization');
  if (!auth) {
    if (requireAuth && (ctx.method === 'GET' || ctx.method === 'HEAD'))
      throw new S3Error('AccessDenied', 'Access Denied');
    return;
  }
  if (!auth.startsWith('AWS4-HMAC-SHA256 ')) return; // V2: s3rver checks those itself
  const parts = {};
  for (const p of auth.slice(17).split(',')) {
    const eq = p.indexOf('=');
    parts[p.slice(0, eq).trim()] = p.slice(eq + 1).trim();
  }
  const cred = (parts.Credential || '').split('/');
  if (cred.length !== 5 || !parts.SignedHeaders || !parts.Signature)
    throw new S3Error('AuthorizationHeaderMalformed', 'The authorization header is malformed.');
  const [id, date, credRegion, service, term] = cred;
  if (credRegion !== region)
    throw new S3Error('AuthorizationHeaderMalformed',
      `The authorization header is malformed; the region '${credRegion}' is wrong; ` +
      `expecting '${region}'`);
  const account = AWSAccount.registry.get(id);
  if (!account) return; // s3rver answers InvalidAccessKeyId
  const key = account.accessKeys.get(id);
  const rawUrl = ctx.req.url;
  const q = rawUrl.indexOf('?');
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = q < 0 ? '' : rawUrl.slice(q + 1);
  const pairs = query === '' ? [] : query.split('&').map(kv => {
    const eq = kv.indexOf('=');
    const k = eq < 0 ? kv : kv.slice(0, eq), v = eq < 0 ? '' : kv.slice(eq + 1);
    return [enc(decodeURIComponent(k)), enc(decodeURIComponent(v))];
  }).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const canonPath = rawPath.split('/').map(s => enc(decodeURIComponent(s))).join('/');
  const signed = parts.SignedHeaders.split(';');
  const headers = signed.map(h => `${h}:${String(ctx.get(h)).trim().replace(/\s+/g, ' ')}\n`);
  const payload = ctx.get('x-amz-content-sha256') || sha256('');
  const creq = [ctx.method, canonPath, pairs.map(p => p.join('=')).join('&'),
                headers.join(''), parts.SignedHeaders, payload].join('\n');
  const amzDate = ctx.get('x-amz-date');
  const scope = [date, credRegion, service, term].join('/');
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(creq)].join('\n');
  const kDate = hmac('AWS4' + key, date);
  const kSigning = hmac(hmac(hmac(kDate, credRegion), service), 'aws4_request');
  const want = crypto.createHmac('sha256', kSigning).update(toSign, 'utf8').digest('hex');
  if (want !== parts.Signature || !signed.includes('host') || amzDate.slice(0, 8) !== date)
    throw new S3Error('SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. ' +
      'Check your key and signing method.');
}

const server = new S3rver({
  address: '127.0.0.1', port, directory: dir, silent: true, configureBuckets: buckets,
  vhostBuckets: false,
});
// After s3rver's logger, before its routes (Koa composes the list when it starts listening).
server.middleware.splice(1, 0, async (ctx, next) => { verify(ctx); await next(); });
server.run().then(addr => {
  process.stdout.write(`LISTENING ${addr.port}\n`);
}, err => { console.error(err); process.exit(1); });
process.on('SIGTERM', () => process.exit(0));
