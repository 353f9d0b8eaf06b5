#!/bin/bash
# The boot script of a scaled deployment's instances (their EC2 user data), written by regctl:
# installs the current release of the registry server from the deployment's S3 bucket, so an
# instance the Auto Scaling group launches on its own comes up with it, with nobody deploying.
#
# cloud-init runs user data once per instance: this script therefore also installs itself as
# a oneshot unit, regctl-fetch.service, ordered before the registry's, so every boot (a reboot
# too) fetches the current release before the server starts.
#
# The object CURRENT names each part of the release (server binary, config, systemd unit) by
# its key and SHA-256. Every part is downloaded and verified before anything is replaced; then
# each is renamed into place. A failed fetch or a checksum mismatch replaces nothing and fails
# loudly: to the journal (or cloud-init's log) and to the console (EC2's "Get system log").
# Credentials are the instance profile's, which the AWS CLI (preinstalled on Amazon Linux 2023)
# gets through IMDSv2; nothing here prints them.
#
# Usage: regctl-fetch [--boot]
#   without --boot (cloud-init, or by hand): fetch, install, enable both units and (re)start
#   the server; with --boot (regctl-fetch.service): fetch and install only, since the server
#   starts after this unit.
# Environment, for tests (unset on an instance):
#   REGCTL_ROOT       install below this directory instead of /
#   SYSTEMCTL         the systemctl command to run (default: systemctl)
#   USERADD           the useradd command to run (default: useradd)
#   REGCTL_CONSOLE    where failures are also written (default: /dev/console)
#   AWS_ENDPOINT_URL  an S3 endpoint instead of AWS's (read by the AWS CLI itself)
set -euo pipefail
umask 022

bucket={{bucket}}
region={{region}}
pointer={{pointer}}
service={{service}}
service_user={{service_user}}
state_dir={{state_dir}}

# The AWS CLI retries throttling, server errors and dropped connections itself (the network
# may still be settling early in a boot); a missing object is not retried.
export AWS_RETRY_MODE=${AWS_RETRY_MODE:-standard} AWS_MAX_ATTEMPTS=${AWS_MAX_ATTEMPTS:-6}

root=${REGCTL_ROOT:-}
systemctl=${SYSTEMCTL:-systemctl}
useradd=${USERADD:-useradd}
console=${REGCTL_CONSOLE:-/dev/console}

self="$root"{{fetch_script}}
fetch_unit="$root"{{fetch_unit}}
mode=${1:-}

say() {
  echo "regctl-fetch: $*" >&2
  echo "regctl-fetch: $*" >>"$console" 2>/dev/null || true
}

failure=""
fail() {
  failure=$*
  exit 1
}

work=$(mktemp -d)
on_exit() {
  status=$?
  rm -rf "$work"
  # Temporary downloads beside their destinations, when a failure left them.
  rm -f "$root"{{binary}}.regctl-new "$root"{{config}}.regctl-new "$root"{{unit}}.regctl-new
  if [ "$status" -ne 0 ]; then
    say "FAILED: ${failure:-a command failed (exit status $status), see above}"
    say "the release of s3://$bucket/$pointer is NOT installed; what was installed before is unchanged"
  fi
}
trap on_exit EXIT

# $1 with $2 as its content (from a file), written atomically; true when it changed.
replace() {
  if [ -f "$1" ] && cmp -s "$2" "$1"; then
    return 1
  fi
  install -m "$3" "$2" "$1.regctl-new"
  mv -f "$1.regctl-new" "$1"
}

# Where a part of the release is installed.
dest_of() {
  case $1 in
    binary) echo "$root"{{binary}} ;;
    config) echo "$root"{{config}} ;;
    unit) echo "$root"{{unit}} ;;
    *) fail "unknown part $1 in s3://$bucket/$pointer" ;;
  esac
}

sha256_of() {
  sha256sum "$1" | cut -c1-64
}

install -d -m 0755 "$root/usr/local/bin" "$root/usr/local/sbin" "$root/etc/regctl" "$root/etc/systemd/system"

# This script and its unit, for the next boots.
units_changed=no
if [ "$0" != "$self" ]; then
  replace "$self" "$0" 0755 || true
fi
cat >"$work/fetch.service" <<'UNIT'
# Installed by regctl's boot script: fetches the current regctl release at every boot.
[Unit]
Description=Fetch the current regctl registry release from S3
Wants=network-online.target
After=network-online.target
Before={{service}}.service

[Service]
Type=oneshot
ExecStart={{fetch_script}} --boot
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
if replace "$fetch_unit" "$work/fetch.service" 0644; then units_changed=yes; fi

# The pointer, then each part it names.
if ! aws s3 cp --only-show-errors --region "$region" "s3://$bucket/$pointer" "$work/current"; then
  fail "cannot read s3://$bucket/$pointer (is a release published? run regctl deploy)"
fi
if ! python3 - "$work/current" >"$work/parts" <<'PY'; then
import json, re, sys

doc = json.load(open(sys.argv[1]))
for part in ("binary", "config", "unit"):
    key, sha = doc[part]["key"], doc[part]["sha256"]
    if not re.fullmatch(r"[0-9a-f]{64}", sha) or not re.fullmatch(r"[A-Za-z0-9._/-]+", key):
        sys.exit("the entry of %s is malformed" % part)
    print(part, key, sha)
PY
  fail "s3://$bucket/$pointer is not a release pointer"
fi

changed=""
while read -r part key sha; do
  dest=$(dest_of "$part")
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$sha" ]; then
    continue
  fi
  if ! aws s3 cp --only-show-errors --region "$region" "s3://$bucket/$key" "$dest.regctl-new"; then
    fail "cannot download s3://$bucket/$key"
  fi
  got=$(sha256_of "$dest.regctl-new")
  if [ "$got" != "$sha" ]; then
    fail "checksum mismatch for s3://$bucket/$key: expected sha256 $sha, got $got"
  fi
  changed="$changed $part"
done <"$work/parts"

# The service account (the unit runs the server as it); systemd makes its state directory.
if ! id -u "$service_user" >/dev/null 2>&1; then
  nologin=$(command -v nologin || echo /bin/false)
  "$useradd" --system --no-create-home --home-dir "$state_dir" --shell "$nologin" "$service_user"
fi

# Everything verified: into place, each file by a rename.
for part in $changed; do
  dest=$(dest_of "$part")
  case $part in
    binary) chmod 0755 "$dest.regctl-new" ;;
    *) chmod 0644 "$dest.regctl-new" ;;
  esac
  mv -f "$dest.regctl-new" "$dest"
  if [ "$part" = unit ]; then units_changed=yes; fi
done
say "release of s3://$bucket/$pointer installed; changed:${changed:- nothing}"

if [ "$mode" = --boot ]; then
  # The server starts after this unit; systemd must read a unit file replaced meanwhile.
  if [ "$units_changed" = yes ]; then "$systemctl" daemon-reload; fi
  exit 0
fi
"$systemctl" daemon-reload
"$systemctl" enable regctl-fetch.service "$service.service"
if [ -n "$changed" ]; then
  "$systemctl" restart "$service.service"
else
  "$systemctl" start "$service.service"
fi
