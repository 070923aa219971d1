#!/usr/bin/env node
// https_server.js - a static file server for the http provider's tests on loopback (Node
// built-ins only): GET /PATH answers the file ROOT/PATH (200 with Content-Length), 404 when
// there is none or it is not a regular file, 401 when a required header is missing or wrong.
// HTTPS with the given certificate and key, or plain HTTP with --plain (to stand behind a
// proxy); with --client-ca the client must present a certificate signed by that CA (the TLS
// handshake fails without one).
//
//   node https_server.js --root DIR [--cert PEM_FILE --key PEM_FILE | --plain]
//        [--client-ca PEM_FILE] [--header "Name: value"]... [--port N]
// Prints "LISTENING <port>" once it listens on 127.0.0.1, then one line per request (the
// request line and the status: no header value).
'use strict';
const http = require('http');
const https = require('https');
const fs = require('fs');
const path = require('path');

const args = { port: 0, headers: [], plain: false };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const v = process.argv[i + 1];
  switch (a) {
    case '--root': args.root = v; i++; break;
    case '--cert': args.cert = fs.readFileSync(v); i++; break;
    case '--key': args.key = fs.readFileSync(v); i++; break;
    case '--client-ca': args.clientCa = fs.readFileSync(v); i++; break;
    case '--header': {
      const at = v.indexOf(':');
      if (at <= 0) { console.error(`https_server: bad --header ${v}`); process.exit(2); }
      args.headers.push([v.slice(0, at).trim().toLowerCase(), v.slice(at + 1).trim()]);
      i++;
      break;
    }
    case '--port': args.port = Number(v); i++; break;
    case '--plain': args.plain = true; break;
    default: console.error(`https_server: unknown argument ${a}`); process.exit(2);
  }
}
if (!args.root || (!args.plain && (!args.cert || !args.key))) {
  console.error('https_server: --root, and --cert and --key unless --plain, are required');
  process.exit(2);
}
const root = fs.realpathSync(args.root);

function answer(req, res) {
  const done = (code, body) => {
    process.stdout.write(`${req.method} ${req.url.split('?')[0]} ${code}\n`);
    res.writeHead(code, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };
  if (req.method !== 'GET') return done(405, 'method not allowed\n');
  for (const [name, value] of args.headers)
    if (req.headers[name] !== value) return done(401, 'unauthorized\n');
  let rel;
  try {
    rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  } catch (e) {
    return done(400, 'bad path\n');
  }
  const file = path.resolve(root, '.' + rel);
  if (file !== root && !file.startsWith(root + path.sep)) return done(404, 'not found\n');
  let st;
  try {
    st = fs.statSync(file);
  } catch (e) {
    return done(404, 'not found\n');
  }
  if (!st.isFile()) return done(404, 'not found\n');
  process.stdout.write(`${req.method} ${req.url.split('?')[0]} 200\n`);
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': st.size });
  fs.createReadStream(file).pipe(res);
}

let server;
if (args.plain) {
  server = http.createServer(answer);
} else {
  const opts = { cert: args.cert, key: args.key };
  if (args.clientCa) Object.assign(opts, { ca: args.clientCa, requestCert: true, rejectUnauthorized: true });
  server = https.createServer(opts, answer);
  server.on('tlsClientError', (e) => process.stdout.write(`tls error: ${e.code || e.message}\n`));
}
server.listen(args.port, '127.0.0.1', () => process.stdout.write(`LISTENING ${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
