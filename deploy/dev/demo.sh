#!/usr/bin/env bash
# The whole story on a fresh checkout, step by step: start the service, import
# demo devices, an agent looks one up and issues a code, the DVR verifies it
# offline, a replay is refused, and the audit trail shows both.
set -euo pipefail
cd "$(dirname "$0")/../.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

work=$(mktemp -d)
trap 'kill $server_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

step "Build the three commands"
mkdir -p bin
go build -o bin/ ./cmd/hotline-server ./cmd/hotlinectl ./cmd/dvr-agent
export PATH="$PWD/bin:$PATH"

step "Find or start PostgreSQL, make a fresh demo database"
admin=$(./deploy/dev/ensure-postgres.sh)
db="hotline_demo_$$"
psql -q "$admin" -c "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="${admin%/*}/$db?sslmode=disable"
cleanup_db() { psql -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'kill $server_pid 2>/dev/null || true; wait 2>/dev/null || true; cleanup_db; rm -rf "$work"' EXIT
export HOTLINE_KEYRING="$work/keyring"
show hotline-server keys init

step "Start hotline-server (migrates on start)"
hotline-server serve --listen 127.0.0.1:0 --trust-keyring-staff-issuer 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do
	addr=$(grep -o '"addr":"[^"]*"' "$work/server.log" | head -1 | cut -d'"' -f4 || true)
	[[ -n "$addr" ]] && break
	sleep 0.1
done
[[ -n "$addr" ]] || { cat "$work/server.log"; exit 1; }
export HOTLINE_ADDR=$addr
echo "listening on $HOTLINE_ADDR"

step "A provisioner imports the factory's list of demo DVRs"
export HOTLINE_TOKEN=$(hotline-server token --subject factory-bot --role provisioner)
cat >"$work/devices.csv" <<'CSV'
serial,model,firmware,owner_contact
JZ6OES#2017-08-01#3#DVR1101134C08011,WBXHD082S2T,4.1.7,jane.doe@example.com
JZ6OES#2017-08-01#3#DVR1101134C08012,WBXHD041S,4.1.7,+441632960789
KQ2M7A#2019-03-14#1#DVR2203114A00042,WBXHD162S4T,4.2.0,ops@shop.example
KQ2M7A#2019-03-14#1#DVR2203114A00043,WBXHD999,4.2.0,ops@shop.example
CSV
cat "$work/devices.csv"
show hotlinectl devices import "$work/devices.csv" || echo "(exit status $?: the bad row is reported, the good rows are in)"
show hotlinectl devices import "$work/devices.csv" || true

step "A support agent looks up the DVR the customer reads out (sloppy input is fine)"
export HOTLINE_TOKEN=$(hotline-server token --subject alice --role agent)
show hotlinectl lookup 'jz6oes # 2017-08-01 # 3 # dvr1101134c08011'
show hotlinectl check-owner 'JZ6OES#2017-08-01#3#DVR1101134C08011' jane.doe@example.com

step "The agent issues a temporary password"
echo "$ hotlinectl issue 'JZ6OES#2017-08-01#3#DVR1101134C08011' --ticket SUP-4711 --verified-by owner-contact"
out=$(hotlinectl issue 'JZ6OES#2017-08-01#3#DVR1101134C08011' --ticket SUP-4711 --verified-by owner-contact)
echo "$out"
code=$(echo "$out" | sed -n 's/^voice code *//p')

step "At the factory the DVR was flashed with its key and the trusted grant keys"
dvr="$work/dvr"; mkdir -p "$dvr/state"
hotline-server keys device-key 'JZ6OES#2017-08-01#3#DVR1101134C08011' >"$dvr/device.key"
hotline-server keys jwks >"$dvr/trust.jwks"
echo "device.key and trust.jwks written to $dvr"

step "The customer types the code on the DVR: verified offline"
show dvr-agent verify --serial 'JZ6OES#2017-08-01#3#DVR1101134C08011' --key-file "$dvr/device.key" --trust "$dvr/trust.jwks" --state "$dvr/state" "$code"

step "The same code again: refused as a replay"
set +e
dvr-agent verify --serial 'JZ6OES#2017-08-01#3#DVR1101134C08011' --key-file "$dvr/device.key" --trust "$dvr/trust.jwks" --state "$dvr/state" "$code"
echo "exit status $?"
set -e

step "The DVR forces a new password that meets the vendor's policy"
echo -n 'secret' | dvr-agent check-password || true
show sh -c "echo -n 'Winter-2026' | dvr-agent check-password"

step "An auditor reads the trail"
export HOTLINE_TOKEN=$(hotline-server token --subject eve --role auditor)
show hotlinectl audit query --serial 'JZ6OES#2017-08-01#3#DVR1101134C08011'
sleep 2 # the sealer links committed events into the signed chain within a second or two
echo "$ hotlinectl audit checkpoint > checkpoint.txt   # keep a copy outside the database"
hotlinectl audit checkpoint >"$work/checkpoint.txt"
cat "$work/checkpoint.txt"
show hotlinectl audit verify --checkpoint "$work/checkpoint.txt"
echo
echo "demo done"
