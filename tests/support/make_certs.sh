#!/usr/bin/env bash
# Make a throw-away PKI for the TLS tests, the benchmark and the demo, with
# the openssl CLI (EC P-256 keys: fast to make). Everything lands in DIR:
#   ca.crt ca.key              the test CA
#   server.crt server.key      for pbx1.test, 127.0.0.1 and ::1, signed by the CA
#   wrongname.crt/.key         for other.test and 10.9.9.9 only
#   expired.crt                server.key's certificate, valid 2020-01-01..02
#   future.crt                 server.key's certificate, valid from 2040
#   rogue-ca.crt/.key          another CA, trusted by nobody
#   rogue.crt                  server.key's names, signed by the rogue CA
#   clientonly.crt             server.key's names, signed by the CA, for client auth only
#   selfsigned.crt             server.key's names, signed by itself
#   client.crt client.key      a client certificate (CN=ami-engine) signed by the CA
#   rogue-client.crt           client.key's certificate signed by the rogue CA
# usage: make_certs.sh DIR
set -euo pipefail
dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name subject
  newkey "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

ext() { # file san eku
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\n%s\n' "$3" \
    "${2:+subjectAltName=$2}" >"$1"
}

sign() { # out csr ca ext
  openssl x509 -req -in "$2" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 825 \
    -extfile "$4" -out "$1" 2>/dev/null
}

ca ca "ami-engine test CA"
ca rogue-ca "rogue CA"

newkey server.key
openssl req -new -key server.key -subj "/CN=pbx1.test" -out server.csr
ext server.ext "DNS:pbx1.test,IP:127.0.0.1,IP:::1" serverAuth
sign server.crt server.csr ca server.ext
sign rogue.crt server.csr rogue-ca server.ext
ext clientonly.ext "DNS:pbx1.test,IP:127.0.0.1,IP:::1" clientAuth
sign clientonly.crt server.csr ca clientonly.ext
openssl req -x509 -key server.key -out selfsigned.crt -days 30 -subj "/CN=pbx1.test" \
  -addext "subjectAltName=DNS:pbx1.test,IP:127.0.0.1,IP:::1" 2>/dev/null

newkey wrongname.key
openssl req -new -key wrongname.key -subj "/CN=other.test" -out wrongname.csr
ext wrongname.ext "DNS:other.test,IP:10.9.9.9" serverAuth
sign wrongname.crt wrongname.csr ca wrongname.ext

newkey client.key
openssl req -new -key client.key -subj "/CN=ami-engine" -out client.csr
ext client.ext "" clientAuth
sign client.crt client.csr ca client.ext
sign rogue-client.crt client.csr rogue-ca client.ext

# Certificates with chosen dates need `openssl ca` and its small database.
cat >ca.cnf <<'EOF'
[ ca ]
default_ca = test_ca
[ test_ca ]
database = index.txt
new_certs_dir = .
serial = ca.serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
EOF
: >index.txt
echo 1000 >ca.serial
dated() { # out start end
  openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in server.csr -out "$1" \
    -startdate "$2" -enddate "$3" -extfile server.ext -notext 2>/dev/null
}
dated expired.crt 20200101000000Z 20200102000000Z
dated future.crt 20400101000000Z 20400102000000Z
rm -f ./*.csr ./*.ext ./*.srl ca.cnf index.txt* ca.serial* ./*.pem
