#!/usr/bin/env bash
# A private CA, a broker certificate and one client certificate per device, with openssl.
#   scripts/mosquitto/make-certs.sh OUT_DIR BROKER_HOSTNAME DEVICE_ID [DEVICE_ID ...]
set -euo pipefail
out=$1; host=$2; shift 2
mkdir -p "$out"; cd "$out"
[ -f ca.key ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=edge-runtime fleet CA" -keyout ca.key -out ca.crt
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$host" \
  -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -out server.crt \
  -extfile <(printf "subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth" "$host")
for dev in "$@"; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$dev" \
    -keyout "$dev.key" -out "$dev.csr"
  openssl x509 -req -in "$dev.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -out "$dev.crt" \
    -extfile <(printf "extendedKeyUsage=clientAuth")
done
rm -f ./*.csr
echo "made $(ls "$out" | tr '\n' ' ')"
