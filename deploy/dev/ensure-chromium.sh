#!/usr/bin/env bash
# Finds Debian's Chromium for the support console's browser tests, installing
# it with apt-get when missing, and prints its path on stdout (everything else
# goes to stderr). Never a downloaded browser build: the package only.
set -euo pipefail

log() { echo "ensure-chromium: $*" >&2; }

for c in chromium chromium-browser; do
	if p=$(command -v "$c" 2>/dev/null); then
		echo "$p"
		exit 0
	fi
done

if ! command -v apt-get >/dev/null 2>&1; then
	log "chromium is missing and there is no apt-get: install Chromium and put it on PATH"
	exit 1
fi
sudo=
if [[ $(id -u) -ne 0 ]]; then
	sudo=sudo
fi
log "installing Debian's chromium"
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
command -v chromium
