#!/usr/bin/env bash
# The whole journey of a regctl user, end to end, on one machine with only loopback:
#
#   provision -> deploy (ACME) -> add-user -> push / list / pull over verified HTTPS
#   -> docker login / push / pull
#   -> a second user added, used and removed -> status -> teardown
#
# The parts are real, started here on free 127.0.0.1 ports: moto server is AWS (EC2, IAM, S3,
# Route 53; regctl talks to it through tests/moto_shim.py, which fixes one moto XML bug),
# Pebble is the ACME server (with a test CA of its own for its HTTPS), an OpenSSH sshd with
# generated keys is the instance, and moto's S3 holds the images. The only stand-in is systemd:
# a `systemctl` script on the SSH session's PATH runs the unit's ExecStart in the background.
#
# The registry's name is registry.e2e.test, with its Route 53 record in moto (zone e2e.test). The
# script runs in a mount namespace of its own whose /etc/hosts resolves that name to 127.0.0.1,
# so every client (regctl's SSH and probes, Pebble's validation, skopeo, curl) finds the
# "instance" on loopback by its name, as it would find a real one through DNS. Everything
# regctl is told is an option a real user has too: AWS_ENDPOINT_URL (or --endpoint-url),
# deploy's --port, --remote-root, --service-user, --listen, --http-addr, --acme-directory,
# --acme-ca-root, --s3-endpoint, --ca-file, and status's --health-url and --ca-file.
#
# Usage: bash tests/e2e.sh   (after `bash tests/run-all --no-run`, which installs the tools)
# Needs root (as in CI) for its mount namespace; as another user it tries `unshare -rm`, which
# needs unprivileged user namespaces (not tried in CI).
# Exit 0 when the journey succeeds; otherwise the failed step, its output, and the logs' tails.
# Prints each stage's wall time at the end. E2E_KEEP=1 keeps the scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export PATH="$repo/.venv-test/bin:$PATH"

DOMAIN=registry.e2e.test
SSHD=/usr/sbin/sshd
ADMIN_PASSWORD="admin-e2e-Pa55word"
ALICE_PASSWORD="alice's e2e secret 1"
BOB_PASSWORD="bob: e2e secret #2"

fail() {
  echo "e2e: FAILED: $*" >&2
  exit 1
}

for tool in moto_server pebble "$SSHD" ssh-keygen skopeo curl openssl python3 setsid timeout unshare mount getent \
  dockerd docker containerd tar; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool is not installed: run \`bash tests/run-all --no-run\` (it installs what the tests need)"
done
command -v cargo >/dev/null 2>&1 || fail "cargo is not on PATH (the Rust toolchain: https://rustup.rs)"
python3 -c 'import boto3' 2>/dev/null || fail "boto3 is missing from .venv-test: run \`bash tests/run-all --no-run\`"

# Into a private mount namespace where /etc/hosts also names the registry (the bind mount is
# gone when the script ends).
if [ -z "${REGCTL_E2E_WORK:-}" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/regctl-e2e.XXXXXX")
  { cat /etc/hosts; echo "127.0.0.1 $DOMAIN"; } >"$work/hosts"
  unshare_args=(--mount)
  if [ "$(id -u)" -ne 0 ]; then unshare_args=(--map-root-user --mount); fi
  status=0
  real_root=
  if [ "$(id -u)" -eq 0 ]; then real_root=1; fi
  REGCTL_E2E_WORK=$work REGCTL_E2E_REAL_ROOT=$real_root unshare "${unshare_args[@]}" \
    sh -c 'mount --bind "$1" /etc/hosts && exec bash "$2"' sh "$work/hosts" "$repo/tests/e2e.sh" || status=$?
  if [ "$status" -eq 0 ] && [ -z "${E2E_KEEP:-}" ]; then rm -rf "$work"; fi
  exit "$status"
fi
work=$REGCTL_E2E_WORK
getent hosts "$DOMAIN" | grep -q '^127\.0\.0\.1' || fail "$DOMAIN does not resolve to 127.0.0.1 in the namespace"
mkdir -p "$work/logs"
pids=()

cleanup() {
  local rc=$?
  set +e
  # The registry server the systemctl stand-in started (in a session of its own).
  if [ -f "$work/standin/regctl-registry.pid" ]; then
    kill "$(cat "$work/standin/regctl-registry.pid")" 2>/dev/null
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [ "$rc" -ne 0 ]; then
    for log in "$work"/logs/*.log "$work/standin/regctl-registry.log"; do
      [ -s "$log" ] || continue
      echo "---- last lines of $log" >&2
      tail -n 25 "$log" >&2
    done
  fi
  if [ "$rc" -ne 0 ] || [ -n "${E2E_KEEP:-}" ]; then
    echo "e2e: scratch directory kept: $work" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stage timing: `stage NAME` starts one (and ends the previous one); `stage` alone ends it.
stage_names=()
stage_seconds=()
stage_name=
stage_start=
stage() {
  local now=$EPOCHREALTIME
  if [ -n "$stage_name" ]; then
    stage_names+=("$stage_name")
    stage_seconds+=("$(python3 -c "print(f'{$now - $stage_start:.1f}')")")
  fi
  stage_name=${1:-}
  stage_start=$now
  [ -z "$stage_name" ] || echo "==== e2e: $stage_name"
}

# `free_ports N`: N distinct free loopback ports.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# `wait_port PORT WHAT PID`: until 127.0.0.1:PORT accepts connections (60 s at most), while PID lives.
wait_port() {
  local deadline=$((SECONDS + 60))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    kill -0 "$3" 2>/dev/null || fail "$2 exited before listening on port $1"
    [ "$SECONDS" -lt "$deadline" ] || fail "$2 did not listen on port $1 within 60 s"
    sleep 0.2
  done
}

# `start NAME CMD...`: runs CMD in the background, output to logs/NAME.log; sets $started.
start() {
  local name=$1
  shift
  "$@" </dev/null >"$work/logs/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
}

# `step NAME [--stdin TEXT] CMD...`: runs CMD (5 minutes at most) with its output shown and kept
# in logs/NAME.log; fails the test when it fails.
step() {
  local name=$1 input=
  shift
  if [ "$1" = --stdin ]; then
    input=$2
    shift 2
  fi
  echo "\$ ${*/#$regctl/regctl}"
  if ! printf '%s\n' "$input" | timeout 300 "$@" >"$work/logs/$name.log" 2>&1; then
    sed 's/^/  | /' "$work/logs/$name.log"
    fail "$name: \`$*\` failed (exit status above)"
  fi
  sed 's/^/  | /' "$work/logs/$name.log"
}

# `expect_in NAME TEXT`: logs/NAME.log contains TEXT.
expect_in() {
  grep -qF -- "$2" "$work/logs/$1.log" || fail "$1: expected \"$2\" in its output"
}

# `json FILE EXPR`: evaluates the Python expression EXPR on the JSON document `d` in FILE.
json() {
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

stage "build regctl"
# The same build as `cargo test --workspace` (tests/run-all), so the dependencies' features match
# and nothing is compiled twice: a bare `cargo build` resolves other features for a few shared
# crates and would rebuild the AWS SDK crates.
cargo build --quiet --workspace --tests
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
regctl="$target_dir/debug/regctl"
[ -x "$regctl" ] || fail "cargo build made no $regctl"

stage "start moto, Pebble, sshd"
read -r moto_port pebble_port pebble_mgmt_port ssh_port https_port http_port <<<"$(free_ports 6)"

# AWS: moto, and the shim regctl talks to.
start moto moto_server -H 127.0.0.1 -p "$moto_port"
moto_pid=$started
moto="http://127.0.0.1:$moto_port"
start shim python3 "$repo/tests/moto_shim.py" --port 0 --upstream "$moto"
shim_pid=$started

# ACME: Pebble, serving its directory over HTTPS with a certificate from a CA made here.
pki=$work/pki
mkdir -p "$pki"
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=regctl e2e Pebble TLS CA" -keyout "$pki/pebble-ca.key" -out "$pki/pebble-ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$pki/pebble.key" -out "$pki/pebble.csr"
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$pki/pebble.ext"
  openssl x509 -req -days 2 -in "$pki/pebble.csr" -CA "$pki/pebble-ca.pem" -CAkey "$pki/pebble-ca.key" \
    -CAcreateserial -extfile "$pki/pebble.ext" -out "$pki/pebble.pem"
} >"$work/logs/openssl.log" 2>&1 || fail "openssl could not make Pebble's certificate"
# Pebble validates the registry's challenges on its ports: TLS-ALPN-01 on the HTTPS listener,
# HTTP-01 on the plain-HTTP one.
cat >"$pki/pebble.json" <<EOF
{"pebble": {
  "listenAddress": "127.0.0.1:$pebble_port",
  "managementListenAddress": "127.0.0.1:$pebble_mgmt_port",
  "certificate": "$pki/pebble.pem",
  "privateKey": "$pki/pebble.key",
  "httpPort": $http_port,
  "tlsPort": $https_port,
  "ocspResponderURL": "",
  "externalAccountBindingRequired": false
}}
EOF
# Validate at once, never reject a good nonce, validate every order afresh.
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  start pebble pebble -config "$pki/pebble.json" -strict=false
pebble_pid=$started

# The instance: sshd with a generated host key, a user key, and systemd's stand-ins on PATH.
inst=$work/instance-host
mkdir -p "$inst/bin" "$work/standin" "$work/instance"
ssh-keygen -q -t ed25519 -N "" -C regctl-e2e-host -f "$inst/host_key" </dev/null
ssh-keygen -q -t ed25519 -N "" -C regctl-e2e-user -f "$inst/user_key" </dev/null
cp "$inst/user_key.pub" "$inst/authorized_keys"
user=$(id -un)
for tool in systemctl journalctl; do
  sed -e "s|@STATE@|$work/standin|g" -e "s|@ROOT@|$work/instance|g" "$repo/tests/standin/$tool" >"$inst/bin/$tool"
done
chmod 755 "$inst/bin/systemctl" "$inst/bin/journalctl"
# The server on the "instance" reaches moto's S3 with these (on EC2: the instance profile).
cat >"$inst/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $inst/host_key
PidFile $inst/sshd.pid
AuthorizedKeysFile $inst/authorized_keys
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
SetEnv PATH=$inst/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
EOF
if [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd; fi
start sshd "$SSHD" -D -e -f "$inst/sshd_config"
sshd_pid=$started

wait_port "$moto_port" moto_server "$moto_pid"
wait_port "$pebble_port" pebble "$pebble_pid"
wait_port "$pebble_mgmt_port" pebble "$pebble_pid"
wait_port "$ssh_port" sshd "$sshd_pid"
deadline=$((SECONDS + 30))
until shim_port=$(sed -n 's/^READY //p' "$work/logs/shim.log") && [ -n "$shim_port" ]; do
  kill -0 "$shim_pid" 2>/dev/null || fail "moto_shim.py exited"
  [ "$SECONDS" -lt "$deadline" ] || fail "moto_shim.py did not start within 30 s"
  sleep 0.2
done
# The root that Pebble's certificates chain to (a new one each start): what clients trust.
curl -sSf --cacert "$pki/pebble-ca.pem" "https://127.0.0.1:$pebble_mgmt_port/roots/0" -o "$pki/pebble-root.pem" ||
  fail "cannot fetch Pebble's issuing root"
mkdir -p "$work/certs" "$work/no-system-roots"
cp "$pki/pebble-root.pem" "$work/certs/ca.crt"

# regctl's AWS is moto (through the shim); its settings file is in the client directory.
client=$work/client
mkdir -p "$client"
cd "$client"
export AWS_ENDPOINT_URL="http://127.0.0.1:$shim_port" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE="$client/no-aws-config" AWS_SHARED_CREDENTIALS_FILE="$client/no-aws-credentials"
unset AWS_PROFILE AWS_SESSION_TOKEN SSH_AUTH_SOCK REGCTL_IAM_WAIT
python3 "$repo/tests/moto_check.py" "$moto" zone "${DOMAIN#*.}" >/dev/null || fail "cannot create the hosted zone in moto"
# The key pair provision launches with (provision checks that the region has it).
python3 "$repo/tests/moto_check.py" "$moto" key-pairs my-key || fail "cannot create the key pair in moto"

stage "provision"
step provision "$regctl" provision --domain "$DOMAIN" --key-name my-key --ssh-cidr 127.0.0.1/32
expect_in provision "S3 bucket"
[ -f regctl.toml ] || fail "provision recorded no regctl.toml"
step provision-again "$regctl" provision
expect_in provision-again "no changes"

stage "deploy (ACME from Pebble)"
# The SSH host is the recorded domain, which resolves to the loopback "instance". Its host key is new:
# regctl looks for fingerprints in the EC2 console output (moto's has none), then trusts it on
# first use and records it.
ssh_args=(--port "$ssh_port" --user "$user" --identity "$inst/user_key" --known-hosts "$client/known_hosts"
  --remote-root "$work/instance" --service-user "$user")
if [ "$(id -u)" -ne 0 ]; then ssh_args+=(--no-sudo); fi
step deploy --stdin "$ADMIN_PASSWORD" "$regctl" deploy "${ssh_args[@]}" \
  --listen "127.0.0.1:$https_port" --http-addr "127.0.0.1:$http_port" \
  --acme-directory "https://127.0.0.1:$pebble_port/dir" --acme-ca-root "$pki/pebble-ca.pem" \
  --acme-email ops@example.com --s3-endpoint "$moto" --ca-file "$pki/pebble-root.pem" \
  --wait 120 --password-stdin
expect_in deploy "created the first user, admin"
expect_in deploy "The registry answers at https://$DOMAIN:$https_port/v2/"
grep -q "Added order" "$work/logs/pebble.log" || fail "Pebble issued no certificate"
# On S3 storage the ACME account and certificate are kept in the bucket, so a new instance serves
# the same certificate without a new order.
bucket=$(sed -n 's/^bucket = "\(.*\)"$/\1/p' regctl.toml)
acme_keys=$(curl -fsS "$moto/$bucket?list-type=2&prefix=regctl/acme/") || fail "cannot list bucket $bucket"
grep -q "account.json</Key>" <<<"$acme_keys" || fail "the ACME cache is not in bucket $bucket: $acme_keys"
registry="$DOMAIN:$https_port"

stage "add-user"
step add-alice --stdin "$ALICE_PASSWORD" "$regctl" add-user alice --password-stdin "${ssh_args[@]}"
expect_in add-alice "User alice created"

# Credentials for skopeo (an auth file) and curl (a config file), never on a command line.
credentials() {
  (umask 077 && python3 - "$registry" "$1" "$2" "$work/auth-$1.json" "$work/curl-$1" <<'EOF'
import base64, json, sys
registry, user, password, auth, curlrc = sys.argv[1:]
token = base64.b64encode(f"{user}:{password}".encode()).decode()
json.dump({"auths": {registry: {"auth": token}}}, open(auth, "w"))
quoted = f"{user}:{password}".replace("\\", "\\\\").replace('"', '\\"')
open(curlrc, "w").write(f'user = "{quoted}"\n')
EOF
  )
}
credentials alice "$ALICE_PASSWORD"
credentials bob "$BOB_PASSWORD"

# `skopeo_tls ARGS...`: skopeo trusting Pebble's root only (the system's roots hidden).
skopeo_tls() {
  SSL_CERT_FILE="$work/certs/ca.crt" SSL_CERT_DIR="$work/no-system-roots" \
    timeout 120 skopeo --insecure-policy "$@" </dev/null
}
# `v2 USER PATH [CURL ARGS]`: GET https://REGISTRY/v2/PATH as USER, verified against Pebble's root.
v2() {
  local user=$1 path=$2
  shift 2
  curl -q -sS --max-time 30 --cacert "$pki/pebble-root.pem" --config "$work/curl-$user" "$@" \
    "https://$registry/v2/$path"
}

# `until_status USER CODE`: waits until GET /v2/ as USER answers CODE. The server re-reads the
# htpasswd file within a second or two of a change (add-user returns before that). Once a
# second: the server refuses a client after 10 failed attempts in a minute.
until_status() {
  local deadline=$((SECONDS + 20)) got
  while got=$(v2 "$1" "" -o /dev/null -w '%{http_code}'); [ "$got" != "$2" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "GET /v2/ as $1: $got, expected $2 within 20 s"
    sleep 1
  done
  echo "  GET /v2/ as $1: $got"
}
until_status alice 200

stage "push (3 layers, skopeo, verified HTTPS)"
# A multi-layer OCI image layout: 3 gzipped tar layers of random bytes, a config, a manifest.
python3 - "$work/image" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
root = sys.argv[1]
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    digest = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, digest), "wb").write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}
layers, diff_ids = [], []
for i, size in enumerate([3 << 20, 1 << 20, 200 << 10]):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(f"layer{i}/data.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644
        t.addfile(info, io.BytesIO(os.urandom(size)))
    diff_ids.append("sha256:" + hashlib.sha256(tar.getvalue()).hexdigest())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   **put(gzip.compress(tar.getvalue(), mtime=0))})
config = {"architecture": "amd64", "os": "linux", "config": {},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **put(json.dumps(config).encode())},
            "layers": layers}
desc = {"mediaType": manifest["mediaType"], **put(json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}
json.dump({"schemaVersion": 2, "manifests": [desc]}, open(os.path.join(root, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(root, "oci-layout"), "w"))
EOF
manifest_digest=$(json "$work/image/index.json" 'd["manifests"][0]["digest"]')
echo "\$ skopeo copy --dest-cert-dir ... oci:image:v1 docker://$registry/e2e/app:v1"
skopeo_tls copy --preserve-digests --dest-tls-verify=true --dest-cert-dir "$work/certs" \
  --dest-authfile "$work/auth-alice.json" "oci:$work/image:v1" "docker://$registry/e2e/app:v1" \
  >"$work/logs/push.log" 2>&1 || { cat "$work/logs/push.log"; fail "skopeo could not push as alice"; }

stage "list and fetch the manifest"
v2 alice _catalog -o "$work/catalog.json" || fail "GET /v2/_catalog failed"
[ "$(json "$work/catalog.json" '"e2e/app" in d["repositories"]')" = True ] ||
  fail "/v2/_catalog has no e2e/app: $(cat "$work/catalog.json")"
v2 alice e2e/app/tags/list -o "$work/tags.json" || fail "GET /v2/e2e/app/tags/list failed"
[ "$(json "$work/tags.json" 'd["tags"]')" = "['v1']" ] || fail "tags of e2e/app: $(cat "$work/tags.json")"
v2 alice e2e/app/manifests/v1 -H "Accept: application/vnd.oci.image.manifest.v1+json" \
  -D "$work/manifest.headers" -o "$work/manifest.json" || fail "GET /v2/e2e/app/manifests/v1 failed"
[ "sha256:$(sha256sum <"$work/manifest.json" | cut -d' ' -f1)" = "$manifest_digest" ] ||
  fail "the manifest served is not the one pushed"
grep -qi "^docker-content-digest: $manifest_digest" "$work/manifest.headers" ||
  fail "no Docker-Content-Digest: $manifest_digest header"
echo "  catalog $(cat "$work/catalog.json"); tags $(cat "$work/tags.json"); manifest $manifest_digest"

# `pull_and_compare USER DIR`: pulls e2e/app:v1 as USER into an OCI layout and checks that every
# blob and the manifest are byte for byte the ones pushed.
pull_and_compare() {
  echo "\$ skopeo copy --src-cert-dir ... docker://$registry/e2e/app:v1 oci:$2:v1   (as $1)"
  skopeo_tls copy --preserve-digests --src-tls-verify=true --src-cert-dir "$work/certs" \
    --src-authfile "$work/auth-$1.json" "docker://$registry/e2e/app:v1" "oci:$work/$2:v1" \
    >"$work/logs/pull-$1.log" 2>&1 || { cat "$work/logs/pull-$1.log"; fail "skopeo could not pull as $1"; }
  [ "$(json "$work/$2/index.json" 'd["manifests"][0]["digest"]')" = "$manifest_digest" ] ||
    fail "the manifest pulled as $1 differs from the one pushed"
  local blob count=0
  for blob in "$work/image/blobs/sha256/"*; do
    cmp -s "$blob" "$work/$2/blobs/sha256/$(basename "$blob")" ||
      fail "blob $(basename "$blob") pulled as $1 differs from the one pushed"
    count=$((count + 1))
  done
  echo "  $count blobs (3 layers, config, manifest) identical"
}

stage "pull back (bit-identical)"
pull_and_compare alice back-alice

stage "docker: login, push, rmi, pull"
# A real docker engine (Debian's dockerd on its own containerd, state in the scratch directory)
# pushes a small imported image to the deployed registry and pulls it back. Caveat: the
# registry's name resolves to 127.0.0.1 here, and docker exempts 127.0.0.0/8 from certificate
# checks whatever certs.d says, so docker's HTTPS is not verified in this stage (skopeo's and
# curl's are, above; tests/clients.rs verifies docker's in a network namespace).
if [ -z "${REGCTL_E2E_REAL_ROOT:-}" ]; then
  echo "  skipped: dockerd needs real root (not a user namespace's)"
else
  dk=$work/docker
  mkdir -p "$dk/etc-docker/certs.d/$registry" "$dk/config" "$dk/rootfs/etc" /etc/docker
  cp "$pki/pebble-root.pem" "$dk/etc-docker/certs.d/$registry/ca.crt"
  # dockerd and the CLI read /etc/docker (certs.d) and dockerd writes key.json there: a private
  # one, in this script's mount namespace.
  mount --bind "$dk/etc-docker" /etc/docker
  printf 'version = 2\nroot = "%s/ctd-root"\nstate = "%s/ctd-state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/containerd.sock"\n[ttrpc]\n  address = "%s/containerd.sock.ttrpc"\n[plugins."io.containerd.internal.v1.opt"]\n  path = "%s/ctd-opt"\n' \
    "$dk" "$dk" "$dk" "$dk" "$dk" >"$dk/containerd.toml"
  start containerd containerd --config "$dk/containerd.toml"
  containerd_pid=$started
  echo '{}' >"$dk/daemon.json"
  start dockerd dockerd --config-file "$dk/daemon.json" --storage-driver vfs --iptables=false --ip-masq=false \
    --bridge=none --containerd "$dk/containerd.sock" --data-root "$dk/data" --exec-root "$dk/exec" \
    --pidfile "$dk/docker.pid" --host "unix://$dk/docker.sock"
  dockerd_pid=$started
  export DOCKER_HOST="unix://$dk/docker.sock" DOCKER_CONFIG="$dk/config" DOCKER_BUILDKIT=0
  deadline=$((SECONDS + 60))
  until docker version >/dev/null 2>&1; do
    kill -0 "$containerd_pid" 2>/dev/null || fail "containerd exited"
    kill -0 "$dockerd_pid" 2>/dev/null || fail "dockerd exited"
    [ "$SECONDS" -lt "$deadline" ] || fail "dockerd did not answer within 60 s"
    sleep 0.5
  done
  step docker-login --stdin "$ALICE_PASSWORD" docker login --username alice --password-stdin "$registry"
  echo "e2e docker image" >"$dk/rootfs/etc/greeting"
  head -c 65536 /dev/urandom >"$dk/rootfs/data.bin"
  tar -C "$dk/rootfs" -cf "$dk/rootfs.tar" .
  image="$registry/e2e/docker:v1"
  step docker-import docker import "$dk/rootfs.tar" "$image"
  image_id=$(docker image inspect --format '{{.Id}}' "$image")
  step docker-push docker push "$image"
  step docker-rmi docker rmi "$image"
  step docker-pull docker pull "$image"
  [ "$(docker image inspect --format '{{.Id}}' "$image")" = "$image_id" ] ||
    fail "docker pulled another image than it pushed"
  echo "  docker pushed and pulled $image ($image_id)"
  unset DOCKER_HOST DOCKER_CONFIG DOCKER_BUILDKIT
fi

stage "second user: add, pull, remove -> 401"
step add-bob --stdin "$BOB_PASSWORD" "$regctl" add-user bob --password-stdin "${ssh_args[@]}"
expect_in add-bob "User bob created"
until_status bob 200
pull_and_compare bob back-bob
step remove-bob "$regctl" remove-user bob "${ssh_args[@]}"
expect_in remove-bob "User bob removed"
until_status bob 401
until_status alice 200

stage "status"
step status "$regctl" status --health-url "https://$registry/v2/" --ca-file "$pki/pebble-root.pem"
timeout 120 "$regctl" status --output json --health-url "https://$registry/v2/" --ca-file "$pki/pebble-root.pem" \
  </dev/null >"$work/status.json" 2>"$work/logs/status-json.log" || fail "regctl status --output json failed"
[ "$(json "$work/status.json" 'sorted({r["status"] for r in d["resources"]})')" = "['ok']" ] ||
  fail "not every resource is ok: $(cat "$work/status.json")"
[ "$(json "$work/status.json" 'len(d["resources"])')" -ge 8 ] || fail "status lists too few resources"
[ "$(json "$work/status.json" 'd["instance"]["state"]')" = running ] || fail "the instance is not running"
[ "$(json "$work/status.json" '"127.0.0.1" in d["dns"]["addresses"]')" = True ] ||
  fail "$DOMAIN does not resolve to 127.0.0.1: $(cat "$work/status.json")"
[ "$(json "$work/status.json" 'd["https"].get("status")')" = 401 ] ||
  fail "the HTTPS probe did not get 401: $(cat "$work/status.json")"
[ "$(json "$work/status.json" 'd["https"].get("certificate_days_left", -1) > 0')" = True ] ||
  fail "no valid certificate seen by the probe: $(cat "$work/status.json")"

stage "teardown"
step teardown "$regctl" teardown --yes --delete-bucket
expect_in teardown "teardown complete"
# Checked with boto3 straight against moto: nothing of the deployment is left.
python3 "$repo/tests/moto_check.py" "$moto" inventory >"$work/inventory.json" || fail "moto inventory failed"
kinds='("buckets", "policies", "roles", "instance_profiles", "security_groups", "addresses", "records")'
leftovers=$(json "$work/inventory.json" "[k for k in $kinds if d[k]] + [i['id'] for i in d['instances']
  if i['state'] not in ('terminated', 'shutting-down')]")
[ "$leftovers" = "[]" ] || fail "left behind after teardown: $leftovers: $(cat "$work/inventory.json")"
timeout 120 "$regctl" status --output json </dev/null >"$work/after.json" 2>"$work/logs/status-after.log" ||
  fail "regctl status after teardown failed"
[ "$(json "$work/after.json" 'd["resources"]')" = "[]" ] || fail "status still finds: $(cat "$work/after.json")"
echo "  moto holds nothing of the deployment; regctl status finds nothing tagged"
stage

echo
echo "e2e: the journey passed. Wall time per stage:"
printf '  %-42s %8s\n' stage seconds
for i in "${!stage_names[@]}"; do
  printf '  %-42s %8s\n' "${stage_names[$i]}" "${stage_seconds[$i]}"
done
printf '  %-42s %8s\n' total "$(python3 -c "print(f'{sum(map(float, \"${stage_seconds[*]}\".split())):.1f}')")"
