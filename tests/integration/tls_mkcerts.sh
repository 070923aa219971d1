#!/bin/sh
# tls_mkcerts.sh DIR NAME - a CA and a certificate it signs, made by openssl, for the TLS tests:
# DIR/NAME-ca.pem (and -ca.key), DIR/NAME.pem and DIR/NAME.key (EC P-256, 1 day, for
# 127.0.0.1 and localhost, usable by a server and a client alike).
set -eu
dir=$1 name=$2
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=$name test CA" -keyout "$name-ca.key" -out "$name-ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$name.ext"
openssl x509 -req -in "$name.csr" -CA "$name-ca.pem" -CAkey "$name-ca.key" -CAcreateserial \
  -days 1 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
rm -f "$name.csr" "$name.ext"
