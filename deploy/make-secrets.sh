#!/bin/sh
# Writes the deployment's secrets, one file each, under ./secrets (or the folder given): random
# database passwords, a metrics token, a webhook secret and a key-encryption key. Never overwrites
# one that exists (a new KEK would make every case's data unreadable).
#
# The folder is its owner's only (0700): nobody else on the host can reach a file in it. The files
# themselves are readable (0444) because Compose mounts a file secret with the host file's owner and
# mode, and the containers' users (the application's uid 10001, postgres', Temporal's) must read it.
#
# Filled in by you: oidc_client_secret and temporal_ui_client_secret (your provider's clients),
# smtp_password (if your mail server wants one), kek_previous (during a key rotation only), and
# files/ for credential files of your own (Temporal Cloud's API key, Vault's token).
set -eu
dir="${1:-${REINTEGRATION_SECRETS_DIR:-./secrets}}"
umask 077
mkdir -p "$dir" "$dir/files"
chmod 0700 "$dir"
chmod 0755 "$dir/files"

write() {
  if [ -e "$dir/$1" ]; then
    chmod 0444 "$dir/$1"  # readable by the containers' users, whoever wrote it (and however)
    echo "kept    $dir/$1"
  else
    printf '%s' "$2" > "$dir/$1"
    chmod 0444 "$dir/$1"
    echo "created $dir/$1${3:+ ($3)}"
  fi
}
random() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

write postgres_password "$(random 24)"
write app_db_password "$(random 24)"
write temporal_db_password "$(random 24)"
write metrics_token "$(random 32)"
write audit_anchor_webhook_secret "$(random 32)"
write kek "$(random 32)"
write kek_previous "" "empty: the old key goes here during a rotation"
write smtp_password "" "empty: your mail server's password, if it wants one"
write oidc_client_secret "" "empty: paste the workspace client's secret from your provider"
write temporal_ui_client_secret "" "empty: paste the Temporal UI client's secret from your provider"
echo "Back up $dir/kek apart from the database: without it no case's personal data can be read."
