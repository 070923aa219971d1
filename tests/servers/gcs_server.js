#!/usr/bin/env node
// gcs_server.js - the subset of Google Cloud Storage that the gcs provider uses, for tests on
// loopback (Node built-ins only):
//   POST /token                         OAuth 2.0 JWT bearer grant (RFC 7523): the assertion's
//                                       RS256 signature is verified with the service account's
//                                       public key, iss/aud/scope/iat/exp are checked; answers
//                                       {"access_token","expires_in","token_type"}.
//   GET  /storage/v1/b/B/o              list objects (prefix, pageToken, maxResults)
//   GET  /storage/v1/b/B/o/NAME         object metadata, or its bytes with alt=media
// Objects are the files under ROOT/B/ (NAME = the path relative to it); an empty directory is
// listed as the zero-byte object "dir/", as a console-made folder is. A bucket is private
// unless named by --public: a request to it needs "Authorization: Bearer T" with a token this
// server issued and that has not expired.
// Errors have the JSON API's form: {"error":{"code":N,"message":"..."}}.
//
//   node gcs_server.js --root DIR --public-key PEM_FILE --client-email EMAIL
//        [--port N] [--public BUCKET]... [--token-ttl SECONDS] [--bad-md5 NAME]...
// Prints "LISTENING <port>" once it listens on 127.0.0.1; one log line per request on stdout
// (issued tokens included: tests grep their client's messages for them).
'use strict';
const http = require('http');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const args = { port: 0, public: [], badMd5: [], tokenTtl: 3600 };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const v = process.argv[i + 1];
  switch (a) {
    case '--root': args.root = v; i++; break;
    case '--public-key': args.publicKey = fs.readFileSync(v, 'utf8'); i++; break;
    case '--client-email': args.clientEmail = v; i++; break;
    case '--port': args.port = Number(v); i++; break;
    case '--public': args.public.push(v); i++; break;
    case '--token-ttl': args.tokenTtl = Number(v); i++; break;
    case '--bad-md5': args.badMd5.push(v); i++; break;
    default: console.error(`gcs_server: unknown argument ${a}`); process.exit(2);
  }
}
if (!args.root || !args.publicKey || !args.clientEmail) {
  console.error('gcs_server: --root, --public-key and --client-email are required');
  process.exit(2);
}

const SCOPES = ['https://www.googleapis.com/auth/devstorage.read_only',
                'https://www.googleapis.com/auth/devstorage.full_control',
                'https://www.googleapis.com/auth/cloud-platform'];
const tokens = new Map(); // token -> expiry (ms)
let tokenRequests = 0;

function log(line) { process.stdout.write(line + '\n'); }

function sendJson(res, code, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(code, { 'Content-Type': 'application/json; charset=UTF-8',
                        'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
function apiError(res, code, message) {
  sendJson(res, code, { error: { code, message, errors: [{ message, domain: 'global' }] } });
}

function b64urlDecode(s) {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new Error('not base64url');
  return Buffer.from(s.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

// The JWT bearer grant: invalid_grant (400) for anything wrong, as Google's endpoint answers.
function token(req, res, body, selfUrl) {
  tokenRequests++;
  const form = new URLSearchParams(body);
  const refuse = (why) => {
    log(`token refused: ${why}`);
    sendJson(res, 400, { error: 'invalid_grant', error_description: why });
  };
  if (req.headers['content-type'] !== 'application/x-www-form-urlencoded')
    return refuse('content type is not application/x-www-form-urlencoded');
  if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer')
    return refuse('grant_type is not jwt-bearer');
  const parts = (form.get('assertion') || '').split('.');
  if (parts.length !== 3) return refuse('assertion is not a JWT');
  let header, claims, sig;
  try {
    header = JSON.parse(b64urlDecode(parts[0]).toString('utf8'));
    claims = JSON.parse(b64urlDecode(parts[1]).toString('utf8'));
    sig = b64urlDecode(parts[2]);
  } catch (e) {
    return refuse(`assertion does not decode: ${e.message}`);
  }
  if (header.alg !== 'RS256') return refuse('alg is not RS256');
  if (header.typ !== undefined && header.typ !== 'JWT') return refuse('typ is not JWT');
  const ok = crypto.verify('RSA-SHA256', Buffer.from(parts[0] + '.' + parts[1]),
                           args.publicKey, sig);
  if (!ok) return refuse('Invalid JWT Signature.');
  if (claims.iss !== args.clientEmail) return refuse('iss is not the service account');
  if (claims.aud !== selfUrl) return refuse(`aud is not ${selfUrl}`);
  const scopes = String(claims.scope || '').split(' ');
  if (!scopes.some((s) => SCOPES.includes(s))) return refuse('no storage scope');
  const now = Math.floor(Date.now() / 1000);
  if (!Number.isInteger(claims.iat) || !Number.isInteger(claims.exp))
    return refuse('iat and exp must be integers');
  if (claims.iat > now + 60 || claims.exp < now || claims.exp - claims.iat > 3600)
    return refuse('Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.');
  const t = 'ya29.' + crypto.randomBytes(24).toString('base64url');
  tokens.set(t, Date.now() + args.tokenTtl * 1000);
  log(`token issued: ${t} ttl ${args.tokenTtl}`);
  sendJson(res, 200, { access_token: t, expires_in: args.tokenTtl, token_type: 'Bearer' });
}

function authorized(req, bucket) {
  if (args.public.includes(bucket)) return 'ok';
  const h = req.headers.authorization;
  if (!h) return 'anonymous';
  const m = /^Bearer (\S+)$/.exec(h);
  if (!m) return 'bad';
  const exp = tokens.get(m[1]);
  return exp !== undefined && exp > Date.now() ? 'ok' : 'bad';
}

// Every object of a bucket, sorted by name (byte order, as GCS lists them).
function walk(bucketDir) {
  const out = [];
  const rec = (dir, rel) => {
    const entries = fs.readdirSync(dir, { withFileTypes: true });
    if (rel !== '' && entries.length === 0) out.push({ name: rel + '/', file: null });
    for (const e of entries) {
      const r = rel === '' ? e.name : rel + '/' + e.name;
      if (e.isDirectory()) rec(path.join(dir, e.name), r);
      else if (e.isFile()) out.push({ name: r, file: path.join(dir, e.name) });
    }
  };
  rec(bucketDir, '');
  out.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  return out;
}

function resource(bucket, o) {
  const data = o.file ? fs.readFileSync(o.file) : Buffer.alloc(0);
  let md5 = crypto.createHash('md5').update(data).digest('base64');
  if (args.badMd5.includes(o.name)) md5 = crypto.createHash('md5').update('x').digest('base64');
  return { kind: 'storage#object', id: `${bucket}/${o.name}/1`, name: o.name, bucket,
           generation: '1', size: String(data.length), md5Hash: md5,
           contentType: 'application/octet-stream' };
}

function storage(req, res, url) {
  const m = /^\/storage\/v1\/b\/([^/]+)\/o(?:\/(.+))?$/.exec(url.pathname);
  if (!m) return apiError(res, 404, 'Not Found');
  const bucket = decodeURIComponent(m[1]);
  const bucketDir = path.join(args.root, bucket);
  if (bucket.includes('/') || bucket.startsWith('.') || !fs.existsSync(bucketDir))
    return apiError(res, 404, 'The specified bucket does not exist.');
  const auth = authorized(req, bucket);
  if (auth === 'anonymous')
    return apiError(res, 401, 'Anonymous caller does not have storage.objects.list access to the Google Cloud Storage bucket.');
  if (auth !== 'ok') return apiError(res, 401, 'Invalid Credentials');
  const objects = walk(bucketDir);
  if (m[2] === undefined) {
    const prefix = url.searchParams.get('prefix') || '';
    const max = Math.min(Number(url.searchParams.get('maxResults') || 1000), 1000);
    if (!(max > 0)) return apiError(res, 400, 'Invalid maxResults');
    const after = url.searchParams.get('pageToken');
    let from = '';
    if (after !== null) {
      from = Buffer.from(after, 'base64url').toString('utf8');
      if (from === '') return apiError(res, 400, 'Invalid pageToken');
    }
    const matching = objects.filter((o) => o.name.startsWith(prefix) &&
                                           (from === '' || Buffer.compare(Buffer.from(o.name), Buffer.from(from)) > 0));
    const page = matching.slice(0, max);
    const body = { kind: 'storage#objects', items: page.map((o) => resource(bucket, o)) };
    if (matching.length > max)
      body.nextPageToken = Buffer.from(page[page.length - 1].name).toString('base64url');
    if (body.items.length === 0) delete body.items;
    return sendJson(res, 200, body);
  }
  const name = decodeURIComponent(m[2]);
  const o = objects.find((x) => x.name === name);
  if (!o) return apiError(res, 404, `No such object: ${bucket}/${name}`);
  if (url.searchParams.get('alt') !== 'media') return sendJson(res, 200, resource(bucket, o));
  const data = o.file ? fs.readFileSync(o.file) : Buffer.alloc(0);
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': data.length,
                       'x-goog-hash': 'md5=' + crypto.createHash('md5').update(data).digest('base64') });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 1 << 20) { req.destroy(); return; }
    chunks.push(c);
  });
  req.on('end', () => {
    const url = new URL(req.url, `http://${req.headers.host || '127.0.0.1'}`);
    log(`${req.method} ${url.pathname}${url.search}`);
    try {
      if (req.method === 'POST' && url.pathname === '/token')
        return token(req, res, Buffer.concat(chunks).toString('utf8'),
                     `http://127.0.0.1:${server.address().port}/token`);
      if (req.method === 'GET' && url.pathname === '/_stats')
        return sendJson(res, 200, { tokenRequests });
      if (req.method === 'GET') return storage(req, res, url);
      apiError(res, 405, 'Method Not Allowed');
    } catch (e) {
      log(`error: ${e.stack}`);
      apiError(res, 500, 'Internal Error');
    }
  });
});
server.listen(args.port, '127.0.0.1', () => log(`LISTENING ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
