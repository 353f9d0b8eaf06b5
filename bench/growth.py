"""Cost that grows with the registry: our server and distribution 2.8 side by side on the same
storage, at 1,000 and 10,000 repositories (and on moto S3 at 1,000). `bench/growth` runs it.

The layouts are written directly in distribution's filesystem layout (and as the same keys in a
moto bucket): repositories `teamN/appM` (100 apps a team), 3 tags each pointing at manifests and
blobs shared by all of them, a `big/tags` repository with 10,000 tags, and some unreferenced
blobs for the collection to find. Every figure is the median of a few runs after one warm-up.
Prints a table, then one line per target.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

IMAGES = 10  # shared images: config + one layer + manifest each
TAGS_PER_REPO = 3
BIG_TAGS = 10_000
GARBAGE = 200  # blobs nothing names
V2 = "docker/registry/v2"


def say(*args):
    print("bench/growth:", *args, file=sys.stderr, flush=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def images():
    """The shared images: (manifest digest, manifest bytes, [(digest, bytes) of its blobs])."""
    found = []
    for i in range(IMAGES):
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i}).encode()
        layer = hashlib.sha512(b"layer %d" % i).digest() * 64
        desc = lambda mt, b: {"mediaType": mt, "digest": "sha256:" + sha(b), "size": len(b)}
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": desc("application/vnd.oci.image.config.v1+json", config),
                "layers": [desc("application/vnd.oci.image.layer.v1.tar", layer)],
            }
        ).encode()
        found.append((sha(manifest), manifest, [(sha(config), config), (sha(layer), layer)]))
    return found


def objects(repos):
    """Every object of the layout as (key below docker/registry/v2, bytes)."""
    imgs = images()
    for digest, manifest, blobs in imgs:
        for d, b in [(digest, manifest)] + blobs:
            yield f"blobs/sha256/{d[:2]}/{d}/data", b
    for g in range(GARBAGE):
        b = b"garbage %d" % g
        yield f"blobs/sha256/{sha(b)[:2]}/{sha(b)}/data", b

    def repo(name, tags):
        base = f"repositories/{name}"
        used = set()
        for tag, image in tags:
            digest, _, blobs = imgs[image]
            link = f"sha256:{digest}".encode()
            yield f"{base}/_manifests/tags/{tag}/current/link", link
            yield f"{base}/_manifests/tags/{tag}/index/sha256/{digest}/link", link
            if digest not in used:
                used.add(digest)
                yield f"{base}/_manifests/revisions/sha256/{digest}/link", link
                for d, _ in blobs:
                    yield f"{base}/_layers/sha256/{d}/link", f"sha256:{d}".encode()

    for i in range(repos):
        tags = [(f"v{t}", (i + t) % IMAGES) for t in range(TAGS_PER_REPO)]
        yield from repo(f"team{i // 100}/app{i % 100}", tags)
    yield from repo("big/tags", [(f"t{t:05}", t % IMAGES) for t in range(BIG_TAGS)])


def write_fs(root, repos):
    for key, data in objects(repos):
        path = os.path.join(root, V2, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, log, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; log {log}:\n" + open(log).read()[-3000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server did not listen; log {log}")


S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
    env.update(extra)
    return env


def our_env(storage):
    if storage[0] == "fs":
        return {}
    _, endpoint, bucket = storage
    return {"REGISTRY_STORAGE": "s3", "REGISTRY_STORAGE_S3_BUCKET": bucket,
            "REGISTRY_STORAGE_S3_REGION": "us-east-1", "REGISTRY_STORAGE_S3_REGIONENDPOINT": endpoint,
            "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true", "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/registry",
            **S3_ENV}


def dist_config(work, storage, port):
    if storage[0] == "fs":
        body = f"  filesystem:\n    rootdirectory: {json.dumps(storage[1])}\n"
    else:
        _, endpoint, bucket = storage
        body = (f"  s3:\n    region: us-east-1\n    bucket: {bucket}\n    regionendpoint: {endpoint}\n"
                f"    forcepathstyle: true\n    rootdirectory: /registry\n    accesskey: bench\n"
                f"    secretkey: bench\n    secure: false\n")
    path = os.path.join(work, f"distribution-{storage[0]}.yml")
    with open(path, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n{body}"
                f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n")
    return path


class Server:
    def __init__(self, kind, args, work, storage):
        self.port = free_port()
        self.log = os.path.join(work, f"{kind}-{storage[0]}.log")
        if kind == "regctl":
            cmd = [args.regctl, "serve", "--addr", f"127.0.0.1:{self.port}"]
            if storage[0] == "fs":
                cmd += ["--root", storage[1]]
            env = clean_env({"RUST_LOG": "warn", **our_env(storage)})
        else:
            cmd = [args.distribution, "serve", dist_config(work, storage, self.port)]
            env = clean_env({})
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_listening(self.port, self.proc, self.log)
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=600) as r:
            return r.read(), r.headers.get("Link")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def timed(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def walk_catalog(server):
    path, count = "/v2/_catalog?n=1000", 0
    while path:
        body, link = server.get(path)
        count += len(json.loads(body)["repositories"])
        m = re.match(r"<([^>]+)>", link or "")
        path = m.group(1) if m else None
    return count


def middle_repo(repos):
    i = repos // 2
    return f"team{i // 100}/app{i % 100}"


def gc_dry_run(args, work, storage, kind):
    """(seconds, peak RSS in MiB) of a dry-run collection."""
    if kind == "regctl":
        cmd = [args.regctl_cli, "gc", "--dry-run", "--grace-period", "0s"]
        cmd += ["--root", storage[1]] if storage[0] == "fs" else []
        env = clean_env(our_env(storage))
    else:
        cmd = [args.distribution, "garbage-collect", "--dry-run", dist_config(work, storage, free_port())]
        env = clean_env({})
    stats = os.path.join(work, "time.txt")
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-v", "-o", stats] + cmd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(stats).read()).group(1))
    return seconds, rss / 1024


def moto_requests(log):
    """S3 requests moto has logged so far (reads: a listing is a GET, a stat a HEAD)."""
    with open(log, errors="replace") as f:
        return sum(1 for line in f if '"GET ' in line or '"HEAD ' in line)


def measure(args, work, storage, repos, rows, moto_log=None):
    label = f"{storage[0]} {repos:,}"
    servers = {k: Server(k, args, work, storage) for k in ("regctl", "distribution")}
    try:
        for kind, server in servers.items():
            n = walk_catalog(server)
            if n != repos + 1:
                raise SystemExit(f"{kind} lists {n} repositories, expected {repos + 1}")
        last = middle_repo(repos)
        page = f"/v2/_catalog?n=100&last={last}"
        rows.append((f"{label}: whole _catalog walk, n=1000",) +
                    tuple(timed(lambda s=s: walk_catalog(s), args.runs) for s in servers.values()))
        rows.append((f"{label}: one _catalog page of 100 after last",) +
                    tuple(timed(lambda s=s: s.get(page), args.runs * 3) for s in servers.values()))
        tags_page = "/v2/big/tags/tags/list?n=100&last=t05000"
        rows.append((f"{label}: tags list, 10,000-tag repo (whole)",) +
                    tuple(timed(lambda s=s: s.get("/v2/big/tags/tags/list"), args.runs) for s in servers.values()))
        rows.append((f"{label}: tags list, 10,000-tag repo (page of 100)",) +
                    tuple(timed(lambda s=s: s.get(tags_page), args.runs * 3) for s in servers.values()))
        if moto_log:
            for what, work_on in (("whole _catalog walk", walk_catalog),
                                  ("one _catalog page", lambda s: s.get(page)),
                                  ("one tags page of 100", lambda s: s.get(tags_page))):
                counts = []
                for server in servers.values():
                    before = moto_requests(moto_log)
                    work_on(server)
                    time.sleep(0.5)  # moto writes its log line after the response
                    counts.append(moto_requests(moto_log) - before)
                rows.append((f"{label}: S3 requests for {what}", *counts, "count"))
    finally:
        for server in servers.values():
            server.stop()
    runs, requests = {}, {}
    for k in servers:
        before = moto_requests(moto_log) if moto_log else 0
        runs[k] = [gc_dry_run(args, work, storage, k) for _ in range(args.gc_runs)]
        if moto_log:
            time.sleep(0.5)
            requests[k] = (moto_requests(moto_log) - before) / args.gc_runs
    rows.append((f"{label}: gc --dry-run time",) +
                tuple(statistics.median(r[0] for r in runs[k]) for k in servers))
    rows.append((f"{label}: gc --dry-run peak RSS", *(max(r[1] for r in runs[k]) for k in servers), "MiB"))
    if moto_log:
        rows.append((f"{label}: S3 requests for gc --dry-run", *(requests[k] for k in servers), "count"))


def show(value, unit):
    if unit == "count":
        return f"{value:.0f}"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--regctl", default="target/release/regctl-registry")
    p.add_argument("--regctl-cli", default="target/release/regctl")
    p.add_argument("--distribution", default=shutil.which("docker-registry") or "/usr/bin/docker-registry")
    p.add_argument("--s3", action="store_true", help="also measure on S3 (a local moto server)")
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--s3-size", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--gc-runs", type=int, default=1)
    p.add_argument("--work", default=None)
    args = p.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="regctl-growth-")
    os.makedirs(work, exist_ok=True)
    rows, page_times = [], {}
    try:
        for repos in [int(s) for s in args.sizes.split(",") if s]:
            root = os.path.join(work, f"fs-{repos}")
            shutil.rmtree(root, ignore_errors=True)
            say(f"writing {repos:,} repositories in distribution's layout under {root}")
            write_fs(root, repos)
            done = len(rows)
            measure(args, work, ("fs", root), repos, rows)
            for row in rows[done:]:
                say("measured:", *row)
            page_times[repos] = next(r[1] for r in rows if r[0] == f"fs {repos:,}: one _catalog page of 100 after last")
            shutil.rmtree(root, ignore_errors=True)
        if args.s3 and args.s3_size:
            port = free_port()
            log = os.path.join(work, "moto.log")
            say(f"starting moto with {args.s3_size:,} repositories in S3")
            seeded = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_seeded.py")
            moto = subprocess.Popen([sys.executable, seeded, str(port), "growth", str(args.s3_size)],
                                    stdout=open(log, "w"), stderr=subprocess.STDOUT, env=clean_env({}))
            try:
                wait_listening(port, moto, log, timeout=600)
                endpoint = f"http://127.0.0.1:{port}"
                done = len(rows)
                measure(args, work, ("s3", endpoint, "growth"), args.s3_size, rows, moto_log=log)
                for row in rows[done:]:
                    say("measured:", *row)
            finally:
                moto.terminate()
                moto.wait()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'work':<{width}}  {'regctl':>12}  {'distribution':>12}  {'ratio':>6}")
    worst = 0.0
    for row in rows:
        what, ours, theirs = row[:3]
        unit = row[3] if len(row) > 3 else "s"
        ratio = ours / theirs if theirs else float("inf")
        if unit != "count":
            worst = max(worst, ratio)
        print(f"{what:<{width}}  {show(ours, unit):>12}  {show(theirs, unit):>12}  {ratio:>5.2f}x")
    if len(page_times) >= 2:
        small, large = min(page_times), max(page_times)
        print(f"catalog page, {large:,} vs {small:,} repositories: {page_times[large] / page_times[small]:.2f}x "
              f"(target: within 2x)")
    print(f"growth: worst ratio {worst:.2f} (target: at most 1.00)")


if __name__ == "__main__":
    main()
