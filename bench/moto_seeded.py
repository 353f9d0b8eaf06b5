"""A moto S3 server that starts with the growth layout already in a bucket, for bench/growth.

Writing 35,000 objects through moto's HTTP API takes 20 minutes and more on this machine (moto
handles a few dozen PUTs a second); putting them straight into its in-memory backend takes
seconds. Then it serves like `moto_server`, logging one line per request to stderr, which
bench/growth counts.

One difference from moto is made on purpose, so that distribution is measured as on S3: moto's
ListObjects (version 1, which distribution's S3 driver uses) truncates only the keys of an answer
at MaxKeys and returns every common prefix at once, where S3 counts each common prefix as one of
the MaxKeys and continues after NextMarker. Unpatched, distribution lists a 10,000-tag directory
in one request that S3 would answer in ten.

Usage: python3 bench/moto_seeded.py PORT BUCKET REPOS
"""

import os
import signal
import sys

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.s3.models import S3Backend, s3_backends

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import growth  # noqa: E402  (the layout: growth.objects)


def list_objects_as_s3(original):
    """S3's ListObjects (version 1) paging: keys and common prefixes in one order, MaxKeys of them
    in all, from after the marker on, and NextMarker the last one returned when truncated."""

    def list_objects(self, bucket, prefix, delimiter, marker, max_keys):
        if max_keys is None:  # moto's ListObjectsV2 calls this for everything, then pages itself
            return original(self, bucket, prefix, delimiter, marker, max_keys)
        keys, folders, _, _ = original(self, bucket, prefix, delimiter, None, None)
        entries = sorted([(k.name, k) for k in keys] + [(f, None) for f in folders], key=lambda e: e[0])
        entries = [e for e in entries if marker is None or e[0] > marker]
        page = entries[:max_keys]
        truncated = len(entries) > len(page)
        keys = [k for _, k in page if k is not None]
        folders = [name for name, k in page if k is None]
        return keys, folders, truncated, page[-1][0] if truncated and page else None

    return list_objects


def main():
    S3Backend.list_objects = list_objects_as_s3(S3Backend.list_objects)
    port, bucket, repos = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    for key, data in growth.objects(repos):
        backend.put_object(bucket, f"registry/{growth.V2}/{key}", data, disable_notification=True)
    growth.say(f"moto: {repos:,} repositories in bucket {bucket}, serving on port {port}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    signal.pause()  # serves until bench/growth terminates it


if __name__ == "__main__":
    main()
