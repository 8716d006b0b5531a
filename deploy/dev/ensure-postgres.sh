#!/usr/bin/env bash
# Finds a PostgreSQL for development and tests, or starts a private one, and
# prints its URL on stdout (everything else goes to stderr). With a database
# name argument (ensure-postgres.sh hotline), it also creates that database
# when missing and prints the URL of it instead.
#
# Order: $DATABASE_URL if it answers; else 127.0.0.1:5432 if it answers
# (trust auth, user postgres); else a private cluster in .pgdata/ on
# 127.0.0.1:55432, created with initdb (as the postgres user when run as
# root: initdb refuses root). Installs Debian's PostgreSQL if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "ensure-postgres: $*" >&2; }

dbname="${1:-}"
# emit prints the URL found, or the URL of database $dbname on that server
# after creating it when missing.
emit() {
	local url=$1
	if [[ -z "$dbname" ]]; then
		echo "$url"
		exit 0
	fi
	if [[ ! "$dbname" =~ ^[a-z_][a-z0-9_]*$ ]]; then
		log "database name $dbname: expected lower-case letters, digits and _"
		exit 2
	fi
	if ! psql -qAt "$url" -c "SELECT 1 FROM pg_database WHERE datname = '$dbname'" | grep -q 1; then
		log "creating database $dbname"
		psql -q "$url" -c "CREATE DATABASE $dbname" >&2
	fi
	local base=${url%%\?*} query=""
	[[ "$url" == *\?* ]] && query="?${url#*\?}"
	echo "${base%/*}/$dbname$query"
	exit 0
}

answers() { # url
	pg_isready -q -d "$1" >/dev/null 2>&1
}

if ! command -v pg_isready >/dev/null 2>&1; then
	log "PostgreSQL client tools missing: installing Debian's postgresql"
	apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

if [[ -n "${DATABASE_URL:-}" ]] && answers "$DATABASE_URL"; then
	echo "$DATABASE_URL" # used as given: it names its database
	exit 0
fi
default="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
if answers "$default"; then
	emit "$default"
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z "$bindir" ]]; then
	log "no PostgreSQL server binaries: installing Debian's postgresql"
	apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
	bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
data="$PWD/.pgdata"
port=55432
private="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
if answers "$private"; then
	emit "$private"
fi
as=()
if [[ $(id -u) == 0 ]]; then
	as=(runuser -u postgres --)
	mkdir -p "$data"
	chown postgres "$data"
fi
if [[ ! -f "$data/PG_VERSION" ]]; then
	log "creating a private cluster in $data"
	"${as[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >&2
fi
log "starting the private cluster on 127.0.0.1:$port"
"${as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
	-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data -c max_connections=200 -c fsync=on" start >&2
emit "$private"
