#!/bin/sh
# Writes the deployment's secrets, one file each, readable by their owner only, under ./secrets (or
# the folder given): random database passwords, a metrics token and a key-encryption key. Never
# overwrites one that exists (a new KEK would make every case's data unreadable). The OIDC
# client's secret is your provider's: this writes an empty file for you to fill in.
set -eu
dir="${1:-${REINTEGRATION_SECRETS_DIR:-./secrets}}"
umask 077
mkdir -p "$dir"

make() {
  if [ -e "$dir/$1" ]; then echo "kept    $dir/$1"; else printf '%s\n' "$2" > "$dir/$1"; echo "created $dir/$1"; fi
}
random() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

make postgres_password "$(random 24)"
make app_db_password "$(random 24)"
make temporal_db_password "$(random 24)"
make metrics_token "$(random 32)"
make kek "$(random 32)"
[ -e "$dir/oidc_client_secret" ] || { : > "$dir/oidc_client_secret"; echo "created $dir/oidc_client_secret (empty: paste your provider's client secret)"; }
echo "Back up $dir/kek apart from the database: without it no case's personal data can be read."
