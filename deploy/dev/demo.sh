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
go build -o bin/ ./cmd/hotline-server ./cmd/hotlinectl ./cmd/dvr-agent ./deploy/dev/mailsink
export PATH="$PWD/bin:$PATH"

step "Find or start PostgreSQL, make a fresh demo database"
admin=$(./deploy/dev/ensure-postgres.sh)
db="hotline_demo_$$"
psql -q "$admin" -c "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="${admin%/*}/$db?sslmode=disable"
cleanup_db() { psql -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'kill $server_pid ${sink_pid:-} 2>/dev/null || true; wait 2>/dev/null || true; cleanup_db; rm -rf "$work"' EXIT
export HOTLINE_KEYRING="$work/keyring"
show hotline-server keys init

step "Start a development mail sink (the owner's mailbox) and hotline-server (migrates on start)"
mkdir -p "$work/inbox"
mailsink --dir "$work/inbox" >"$work/sink.addr" &
sink_pid=$!
for _ in $(seq 100); do [[ -s "$work/sink.addr" ]] && break; sleep 0.1; done
echo "mail sink on $(cat "$work/sink.addr") (plaintext is allowed to loopback only)"
hotline-server serve --listen 127.0.0.1:0 --trust-keyring-staff-issuer --smtp-addr "$(cat "$work/sink.addr")" --smtp-security plain \
	--mail-from 'DVR Support <support@dvr-vendor.example>' --mail-reply-to help@dvr-vendor.example 2>"$work/server.log" &
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

step "The e-mail route: the agent mails a code to the registered address"
export HOTLINE_TOKEN=$(hotline-server token --subject alice --role agent)
show hotlinectl send-code 'JZ6OES#2017-08-01#3#DVR1101134C08011'
inbox() { for _ in $(seq 100); do [[ -f "$work/inbox/$1.eml" ]] && break; sleep 0.1; done; }
inbox 001
echo "--- the message as the owner receives it ---"
cat "$work/inbox/001.eml"
echo "--- end ---"
ocode=$(sed -n 's/^    \([0-9]\{3\}\) \([0-9]\{3\}\)\r\{0,1\}$/\1\2/p' "$work/inbox/001.eml")
step "The caller reads it back; a wrong entry is refused and counted"
hotlinectl verify-code 'JZ6OES#2017-08-01#3#DVR1101134C08011' 000000 || echo "exit status $?"
show hotlinectl verify-code 'JZ6OES#2017-08-01#3#DVR1101134C08011' "$ocode"

step "The temporary password goes to the registered address: the agent never sees it"
show hotlinectl issue 'JZ6OES#2017-08-01#3#DVR1101134C08011' --ticket SUP-4712 --verified-by email-code --deliver email
inbox 002
show hotlinectl deliveries 'JZ6OES#2017-08-01#3#DVR1101134C08011'
echo "--- the message as the owner receives it ---"
cat "$work/inbox/002.eml"
echo "--- end ---"
mcode=$(tr -d '\r' <"$work/inbox/002.eml" | sed -n 's/^    \([0-9A-Z]\{4\}-[0-9A-Z]\{4\}-[0-9A-Z]\{4\}-[0-9A-Z]\{4\}\)$/\1/p')
step "The owner types the mailed code on the DVR"
show dvr-agent verify --serial 'JZ6OES#2017-08-01#3#DVR1101134C08011' --key-file "$dvr/device.key" --trust "$dvr/trust.jwks" --state "$dvr/state" "$mcode"

step "Guessing a phone number from its mask stops after five misses"
for g in +441632960700 +441632960701 +441632960702 +441632960703 +441632960704 +441632960789; do
	hotlinectl check-owner 'JZ6OES#2017-08-01#3#DVR1101134C08012' "$g" 2>&1 || true
done

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
