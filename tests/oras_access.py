#!/usr/bin/env python3
"""What the `oras` Python client may do as one user: pull, push, delete a tag.

Driven by tests/access.rs. With the user's credentials (ORAS_USER and ORAS_PASS, never argv),
through oras' `basic` or `token` (Docker's Bearer flow) auth backend, it:

  1. pulls --pull (`repo:tag`): the manifest, then every layer, into a temporary directory;
  2. pushes --file as an artifact to --push (`repo:tag`);
  3. deletes the tag of --delete (`repo:tag`): HEAD for the digest, then DELETE.

Prints one JSON line, each step's outcome: {"pull": ..., "push": ..., "delete": ...}, where an
outcome is {"ok": true} or {"ok": false, "error": "<what oras raised>"}.
"""

import argparse
import json
import os
import sys
import tempfile

import oras.client


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--registry", required=True, help="host:port, plain HTTP")
    p.add_argument("--auth", choices=["basic", "token"], required=True)
    p.add_argument("--pull", required=True)
    p.add_argument("--push", required=True)
    p.add_argument("--file", required=True, help="the pushed artifact's one layer")
    p.add_argument("--delete", required=True)
    args = p.parse_args()

    client = oras.client.OrasClient(hostname=args.registry, insecure=True, auth_backend=args.auth)
    client.auth.set_basic_auth(os.environ["ORAS_USER"], os.environ["ORAS_PASS"])
    ref = lambda target: f"{args.registry}/{target}"  # noqa: E731

    def pull():
        with tempfile.TemporaryDirectory() as out:
            container = client.get_container(ref(args.pull))
            manifest = client.get_manifest(container)
            for layer in manifest["layers"]:
                client.download_blob(container, layer["digest"], os.path.join(out, "layer"))

    def push():
        response = client.push(
            target=ref(args.push), files=[args.file], disable_path_validation=True, quiet=True
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"manifest PUT answered {response.status_code}")

    def delete():
        container = client.get_container(ref(args.delete))
        if not client.delete_tag(container, container.tag):
            raise RuntimeError("the tag was not found")

    print(json.dumps({"pull": outcome(pull), "push": outcome(push), "delete": outcome(delete)}))
    return 0


def outcome(step) -> dict:
    """Runs `step`: what oras made of the registry's answer."""
    try:
        step()
        return {"ok": True}
    except Exception as e:  # noqa: BLE001 - whatever oras raises is the outcome
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


if __name__ == "__main__":
    sys.exit(main())
