#!/usr/bin/env python3
"""Push an OCI artifact that refers to a subject manifest, with the `oras` Python client.

Driven by tests/images.rs. Two ways of typing the artifact, both of which the referrers API must
report as the descriptor's artifactType:

  --type-via config    oras' own push(): the type is the config's mediaType (blob uploaded in
                       chunks with PATCH, to exercise chunked uploads)
  --type-via field     the manifest's `artifactType` field, with the empty config
                       (application/vnd.oci.empty.v1+json), put together from oras' lower-level
                       upload_blob() and upload_manifest()

Prints one JSON line: {"status": <HTTP status of the manifest PUT>}.
"""

import argparse
import json
import os
import sys
import tempfile

import oras.client
import oras.oci

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--registry", required=True, help="host:port, plain HTTP")
    p.add_argument("--target", required=True, help="repo:tag to push the artifact to")
    p.add_argument("--artifact-type", required=True)
    p.add_argument("--type-via", choices=["config", "field"], required=True)
    p.add_argument("--file", required=True, help="the artifact's one layer")
    p.add_argument("--layer-media-type", default="application/octet-stream")
    p.add_argument("--subject-digest", required=True)
    p.add_argument("--subject-size", type=int, required=True)
    p.add_argument("--subject-media-type", required=True)
    p.add_argument("--annotation", action="append", default=[], help="key=value, on the manifest")
    args = p.parse_args()

    client = oras.client.OrasClient(hostname=args.registry, insecure=True)
    target = f"{args.registry}/{args.target}"
    subject = oras.oci.Subject(
        mediaType=args.subject_media_type, digest=args.subject_digest, size=args.subject_size
    )
    annotations = dict(a.split("=", 1) for a in args.annotation)

    if args.type_via == "config":
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "config.json")
            with open(config, "w") as f:
                json.dump({"tool": "regctl tests", "artifactType": args.artifact_type}, f)
            response = client.push(
                target=target,
                files=[f"{args.file}:{args.layer_media_type}"],
                manifest_config=f"{config}:{args.artifact_type}",
                manifest_annotations=annotations or None,
                subject=subject,
                disable_path_validation=True,
                do_chunked=True,
                chunk_size=4096,
                quiet=True,
            )
    else:
        container = client.get_container(target)
        layer = oras.oci.NewLayer(args.file, media_type=args.layer_media_type)
        check(client.upload_blob(args.file, container, layer))
        with tempfile.TemporaryDirectory() as tmp:
            empty = os.path.join(tmp, "empty.json")
            with open(empty, "wb") as f:
                f.write(b"{}")
            config = oras.oci.NewLayer(empty, media_type=EMPTY_MEDIA_TYPE)
            check(client.upload_blob(empty, container, config))
        manifest = oras.oci.NewManifest()
        manifest["artifactType"] = args.artifact_type
        manifest["config"] = {k: config[k] for k in ("mediaType", "digest", "size")}
        manifest["layers"] = [{k: layer[k] for k in ("mediaType", "digest", "size")}]
        manifest["subject"] = {
            "mediaType": subject.mediaType,
            "digest": subject.digest,
            "size": subject.size,
        }
        if annotations:
            manifest["annotations"] = annotations
        else:
            del manifest["annotations"]
        response = client.upload_manifest(manifest, container)

    check(response)
    print(json.dumps({"status": response.status_code}))
    return 0


def check(response) -> None:
    """Exit with the registry's answer when a request did not succeed."""
    if response.status_code not in (200, 201, 202):
        sys.exit(f"HTTP {response.status_code} from {response.url}: {response.text}")


if __name__ == "__main__":
    sys.exit(main())
