#!/usr/bin/env python3
"""A small HTTP proxy in front of moto_server for the provisioning tests and benchmark.

It forwards every request to moto unchanged, and can:

* --fail ACTION=N[:CODE]
                    answer the first N requests of a Query-protocol action (EC2, IAM, STS:
                    `Action=...` in the form body) with an error: by default the one EC2 gives
                    while IAM has not propagated a new instance profile, so regctl's retry path
                    can be tested (moto itself never delays); with CODE, that error code (e.g.
                    AccessDenied), in the format of the service called;
* --hang ACTION     hold every request of that action without answering (printing
                    "HANG <action>" on stdout first), so a test can kill regctl half-way at a
                    known point;
* --hang-after-first-change
                    forward the first request that changes something (any action but
                    Describe*/List*/Get*, S3 and Route 53 writes included) to moto, then hold its
                    answer (printing "HANG <action>"): the change is made but the caller never
                    learns it, the worst moment for it to die;
* --not-found-after-create ACTION=N
                    answer the first N requests of ACTION that name a resource created through
                    this shim (an instance or group ID, a role, policy, profile or bucket) with
                    that resource's "not found" error, without forwarding them, printing
                    "NOTFOUND <action>": AWS's eventual consistency right after a create
                    (InvalidInstanceID.NotFound, InvalidGroup.NotFound, NoSuchBucket, NoSuchEntity),
                    which moto, consistent at once, never shows;
* --not-found-after-put N
                    answer the first N GET or HEAD requests of an S3 object after each write of it
                    through this shim (PutObject, CopyObject, CompleteMultipartUpload) with 404
                    NoSuchKey, without forwarding them, printing "NOTFOUND GetObject" (or
                    HeadObject): S3 not showing a just-written object yet, as while versioning,
                    first enabled on the bucket, propagates;
* --stale-read ACTION=N
                    forward the first N requests of an EC2 Describe action, then take the
                    ingress rules (ipPermissions) out of the answer: a read that does not reflect
                    the latest writes yet, as EC2's eventual consistency allows;
* --amazon-images-elsewhere
                    answer DescribeImages that asks for an owner by account ID with no images,
                    as in an opt-in region, where Amazon's images belong to another account than
                    in the older regions (the `amazon` owner alias finds them everywhere);
* --console-output-latest-only
                    answer GetConsoleOutput with cloud-init's host-key block when it asks for the
                    latest output (Latest=true), and with no output otherwise: on Nitro instances
                    the output buffered at boot stays empty for minutes;
* --instance-refreshes
                    answer StartInstanceRefresh and DescribeInstanceRefreshes, which moto 5.2 does
                    not implement: a start prints "REFRESH <group> min=<MinHealthyPercentage>
                    max=<MaxHealthyPercentage> skip-matching=<SkipMatching>" and answers an ID; the refresh then reports
                    InProgress once and Successful after (nothing is replaced);
* --type-not-offered-in ZONE
                    leave ZONE out of DescribeInstanceTypeOfferings' answers: a zone that does not
                    offer the instance type (t3 is missing in some zones of some accounts);
* --s3-faults RATE  for that fraction of S3 requests (chosen with --seed), inject one fault:
                    503 SlowDown without forwarding, 500 InternalError after forwarding (the
                    request took effect), a stall of 1 s, the connection closed without an
                    answer, or (GETs) the body cut in half under a full Content-Length.
                    GET /__shim/stats answers the counts as JSON.

Actions are named by the form's `Action` (Query protocol: EC2, IAM, STS, ELB, Auto Scaling), by
`X-Amz-Target` (JSON protocol: ACM), or by the method and path (S3, Route 53).

It also works around one moto 5.2 bug the Rust SDK trips on and boto3 does not: moto names the
XML root of GetBucketVersioning's answer `GetBucketVersioningResponse` where S3 sends
`VersioningConfiguration` (the element the SDK checks). Nothing else is rewritten.

Usage: moto_shim.py --port PORT --upstream http://127.0.0.1:MOTO_PORT [--fail A=N[:CODE]]... [--hang A]...
                    [--hang-after-first-change] [--not-found-after-create A=N]... [--not-found-after-put N] [--stale-read A=N]... [--amazon-images-elsewhere]
                    [--console-output-latest-only] [--instance-refreshes] [--type-not-offered-in ZONE] [--s3-faults RATE --seed N]
Prints "READY <port>" when it listens (--port 0 picks a free port).
"""

import argparse
import base64
import http.client
import json
import random
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EC2_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
    "<RequestID>moto-shim</RequestID></Response>"
)
QUERY_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
    "<RequestId>moto-shim</RequestId></ErrorResponse>"
)


def error_answer(action, code, form, authorization):
    """The status and XML body of an injected error, in the called service's format."""
    if code is None:
        profile = (form.get("IamInstanceProfile.Name") or ["?"])[0]
        code = "InvalidParameterValue"
        message = (f"Value ({profile}) for parameter iamInstanceProfile.name is invalid. "
                   "Invalid IAM Instance Profile name")
    else:
        message = f"injected by moto_shim.py: not authorized to perform {action}"
    status = 403 if code in ("AccessDenied", "UnauthorizedOperation") else 400
    service = authorization.split("Credential=", 1)[-1].split("/")[3] if "Credential=" in authorization else ""
    template = EC2_ERROR if service == "ec2" else QUERY_ERROR
    return status, template.format(code=code, message=message).encode()

# The "not found" error of each action --not-found-after-create can delay: (code, HTTP status).
NOT_FOUND = {
    "DescribeInstances": ("InvalidInstanceID.NotFound", 400),
    "AuthorizeSecurityGroupIngress": ("InvalidGroup.NotFound", 400),
    "AttachRolePolicy": ("NoSuchEntity", 404),
    "AddRoleToInstanceProfile": ("NoSuchEntity", 404),
}
# What a successful create answers or asks for that later requests name the resource by.
CREATED_IDS = re.compile(rb"<(?:instanceId|groupId|Arn)>([^<]+)</")
CREATE_ACTIONS = ("RunInstances", "CreateSecurityGroup", "CreateRole", "CreatePolicy", "CreateInstanceProfile",
                  "CreateBucket")


def created_names(action, form, path, data):
    """The names and IDs a successful create of `action` makes known."""
    if action == "CreateBucket":
        return {bucket_of(path)}
    names = {v[0] for k, v in form.items() if k.endswith("Name") and k != "Action"}
    return names | {m.decode() for m in CREATED_IDS.findall(data)}


def named(form, path, service):
    """Every name a request mentions: its form values, or its bucket for S3."""
    if service == "s3":
        return {bucket_of(path)}
    return {v for values in form.values() for v in values}


def bucket_of(path):
    """The bucket of a path-style S3 request."""
    return urllib.parse.urlparse(path).path.strip("/").split("/")[0]


NO_IMAGES = (b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeImagesResponse '
             b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>moto-shim</requestId>'
             b"<imagesSet/></DescribeImagesResponse>")

HOST_KEYS = (
    "[   12.3] cloud-init[1234]: Cloud-init finished\n"
    "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
    "ec2: 256 SHA256:AbCdEf0123456789abcdef0123456789abcdef01234 no comment (ECDSA)\n"
    "ec2: 256 SHA256:ZyXw9876543210zyxw9876543210zyxw98765432109 no comment (ED25519)\n"
    "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
)


def console_output(form, latest):
    """A GetConsoleOutput answer: the host-key block when `latest`, no output otherwise."""
    instance = (form.get("InstanceId") or [""])[0]
    output = f"<output>{base64.b64encode(HOST_KEYS.encode()).decode()}</output>" if latest else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse '
            f'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>moto-shim</requestId>'
            f"<instanceId>{instance}</instanceId><timestamp>2026-01-01T00:00:00.000Z</timestamp>"
            f"{output}</GetConsoleOutputResponse>").encode()


AUTOSCALING = "http://autoscaling.amazonaws.com/doc/2011-01-01/"


def instance_refresh_answer(action, result):
    """An Auto Scaling Query answer of `action` whose result element holds `result`."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{AUTOSCALING}">'
            f"<{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>moto-shim</RequestId>"
            f"</ResponseMetadata></{action}Response>").encode()


S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>injected by moto_shim.py</Message>"
    "<RequestId>moto-shim</RequestId></Error>"
)
S3_FAULTS = ("slowdown", "internal-after", "stall", "reset", "truncate")


def service_of(authorization):
    """The signing service of a SigV4 request (`s3`, `ec2`, ...), or empty."""
    if "Credential=" not in authorization:
        return ""
    scope = authorization.split("Credential=", 1)[-1].split(",")[0].split("/")
    return scope[3] if len(scope) > 3 else ""


def rest_action(method, path, service):
    """A name for an S3 or Route 53 (REST) request, in the style of the Query actions."""
    url = urllib.parse.urlparse(path)
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    if service == "route53" or url.path.startswith("/2013-04-01/"):
        if method == "POST" and url.path.endswith("/rrset"):
            return "ChangeResourceRecordSets"
        return f"Route53{method.title()}"
    sub = next((k for k in ("versioning", "tagging", "lifecycle", "publicAccessBlock", "encryption",
                            "policy", "delete", "uploads", "uploadId") if k in query), "")
    names = {("PUT", ""): "PutObject", ("PUT", "versioning"): "PutBucketVersioning",
             ("PUT", "tagging"): "PutBucketTagging", ("PUT", "lifecycle"): "PutBucketLifecycle",
             ("PUT", "publicAccessBlock"): "PutPublicAccessBlock", ("PUT", "encryption"): "PutBucketEncryption",
             ("PUT", "policy"): "PutBucketPolicy", ("POST", "delete"): "DeleteObjects",
             ("DELETE", ""): "DeleteObject", ("DELETE", "uploadId"): "AbortMultipartUpload",
             ("POST", "uploads"): "CreateMultipartUpload", ("POST", "uploadId"): "CompleteMultipartUpload",
             ("PUT", "uploadId"): "UploadPart"}
    name = names.get((method, sub), f"S3{method.title()}{sub[:1].upper()}{sub[1:]}")
    if url.path.strip("/").count("/") == 0 and name in ("PutObject", "DeleteObject"):
        name = "CreateBucket" if method == "PUT" else "DeleteBucket"
    return name


def is_change(method, action):
    """True for a request that changes something."""
    if method in ("GET", "HEAD"):
        return False
    return not action.startswith(("Describe", "List", "Get"))


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--fail", action="append", default=[])
    parser.add_argument("--hang", action="append", default=[])
    parser.add_argument("--hang-after-first-change", action="store_true")
    parser.add_argument("--not-found-after-create", action="append", default=[])
    parser.add_argument("--not-found-after-put", type=int, default=0)
    parser.add_argument("--stale-read", action="append", default=[])
    parser.add_argument("--amazon-images-elsewhere", action="store_true")
    parser.add_argument("--console-output-latest-only", action="store_true")
    parser.add_argument("--instance-refreshes", action="store_true")
    parser.add_argument("--type-not-offered-in")
    parser.add_argument("--s3-faults", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stats = {"s3_requests": 0, **{kind: 0 for kind in S3_FAULTS}}
    hang_next_change = [args.hang_after_first_change]

    upstream = urllib.parse.urlparse(args.upstream)
    failures = {}
    codes = {}
    for spec in args.fail:
        action, rest = spec.split("=", 1)
        count, _, code = rest.partition(":")
        failures[action] = int(count)
        codes[action] = code or None
    hangs = set(args.hang)
    not_found = {}
    for spec in args.not_found_after_create:
        action, count = spec.split("=", 1)
        not_found[action] = int(count)
    created = set()
    unseen = {}  # S3 object path -> GETs/HEADs still to answer 404 (--not-found-after-put)
    stale = {}
    for spec in args.stale_read:
        action, count = spec.split("=", 1)
        stale[action] = int(count)
    refreshes = {}  # refresh ID -> [group, DescribeInstanceRefreshes answered so far]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _proxy(self):
            if self.path == "/__shim/stats":
                with lock:
                    data = json.dumps(stats).encode()
                self._answer(200, {"Content-Type": "application/json"}, data)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            form = {}
            if body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            service = service_of(self.headers.get("Authorization") or "")
            # JSON-protocol services (ACM) name the action in X-Amz-Target: `Service.Action`.
            target = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
            action = (form.get("Action") or [""])[0] or target or rest_action(self.command, self.path, service)

            fault = None
            if args.s3_faults and service == "s3":
                with lock:
                    stats["s3_requests"] += 1
                    if rng.random() < args.s3_faults:
                        fault = rng.choice(S3_FAULTS)
                        if fault == "truncate" and self.command != "GET":
                            fault = "reset"
                        stats[fault] += 1
            if fault == "slowdown":
                self._answer(503, {"Content-Type": "application/xml"},
                             S3_ERROR.format(code="SlowDown").encode())
                return
            if fault == "reset":
                self.close_connection = True
                return
            if fault == "stall":
                time.sleep(1)

            if action in hangs:
                print(f"HANG {action}", flush=True)
                time.sleep(3600)
                return
            with lock:
                remaining = failures.get(action, 0)
                if remaining > 0:
                    failures[action] = remaining - 1
            if remaining > 0:
                status, data = error_answer(action, codes[action], form, self.headers.get("Authorization") or "")
                self._answer(status, {"Content-Type": "text/xml"}, data)
                print(f"FAILED {action}", flush=True)
                return

            if args.amazon_images_elsewhere and action == "DescribeImages" and any(
                    k.startswith("Owner.") and v[0].isdigit() for k, v in form.items()
            ):
                self._answer(200, {"Content-Type": "text/xml"}, NO_IMAGES)
                print("NOIMAGES DescribeImages", flush=True)
                return

            if args.console_output_latest_only and action == "GetConsoleOutput":
                latest = (form.get("Latest") or [""])[0] == "true"
                self._answer(200, {"Content-Type": "text/xml"}, console_output(form, latest))
                print(f"CONSOLE latest={latest}", flush=True)
                return

            if args.instance_refreshes and action == "StartInstanceRefresh":
                group = (form.get("AutoScalingGroupName") or [""])[0]
                prefs = {k: (form.get(f"Preferences.{k}") or ["?"])[0]
                         for k in ("MinHealthyPercentage", "MaxHealthyPercentage", "SkipMatching")}
                with lock:
                    refresh = f"refresh-{len(refreshes) + 1}"
                    refreshes[refresh] = [group, 0]
                print(f"REFRESH {group} min={prefs['MinHealthyPercentage']} max={prefs['MaxHealthyPercentage']}"
                      f" skip-matching={prefs['SkipMatching']}", flush=True)
                self._answer(200, {"Content-Type": "text/xml"},
                             instance_refresh_answer(action, f"<InstanceRefreshId>{refresh}</InstanceRefreshId>"))
                return
            if args.instance_refreshes and action == "DescribeInstanceRefreshes":
                group = (form.get("AutoScalingGroupName") or [""])[0]
                members = ""
                with lock:
                    for refresh, seen in refreshes.items():
                        if seen[0] != group:
                            continue
                        status, percent = ("InProgress", 50) if seen[1] == 0 else ("Successful", 100)
                        seen[1] += 1
                        members += (f"<member><InstanceRefreshId>{refresh}</InstanceRefreshId>"
                                    f"<AutoScalingGroupName>{group}</AutoScalingGroupName><Status>{status}</Status>"
                                    f"<PercentageComplete>{percent}</PercentageComplete></member>")
                self._answer(200, {"Content-Type": "text/xml"},
                             instance_refresh_answer(action, f"<InstanceRefreshes>{members}</InstanceRefreshes>"))
                return

            with lock:
                delay = not_found.get(action, 0) > 0 and bool(named(form, self.path, service) & created)
                if delay:
                    not_found[action] -= 1
            if delay:
                self._not_found(action, service)
                return
            object_path = urllib.parse.urlparse(self.path).path
            with lock:
                hidden = (service == "s3" and self.command in ("GET", "HEAD")
                          and unseen.get(object_path, 0) > 0)
                if hidden:
                    unseen[object_path] -= 1
            if hidden:
                self._answer(404, {"Content-Type": "application/xml"}, S3_ERROR.format(code="NoSuchKey").encode())
                print(f"NOTFOUND {'GetObject' if self.command == 'GET' else 'HeadObject'}", flush=True)
                return

            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = upstream.netloc
            if body:
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if b"<GetBucketVersioningResponse" in data[:200]:
                data = data.replace(b"GetBucketVersioningResponse", b"VersioningConfiguration")
            with lock:
                outdated = stale.get(action, 0) > 0
                if outdated:
                    stale[action] -= 1
            if outdated:
                data = re.sub(rb"<ipPermissions>.*?</ipPermissions>", b"<ipPermissions/>", data, flags=re.S)
                print(f"STALE {action}", flush=True)
            if args.type_not_offered_in and action == "DescribeInstanceTypeOfferings":
                zone = f"<location>{args.type_not_offered_in}</location>".encode()
                data = re.sub(rb"<item>(?:(?!</item>).)*</item>",
                              lambda m: b"" if zone in m.group(0) else m.group(0), data, flags=re.S)
            if (args.not_found_after_put and action in ("PutObject", "CompleteMultipartUpload")
                    and 200 <= resp.status < 300):
                with lock:
                    unseen[object_path] = args.not_found_after_put
            if action in CREATE_ACTIONS and 200 <= resp.status < 300:
                with lock:
                    created.update(created_names(action, form, self.path, data))
            if fault == "internal-after":
                self._answer(500, {"Content-Type": "application/xml"},
                             S3_ERROR.format(code="InternalError").encode())
                return
            with lock:
                hang = hang_next_change[0] and is_change(self.command, action)
                if hang:
                    hang_next_change[0] = False
            if hang:
                print(f"HANG {action}", flush=True)
                time.sleep(3600)
                return
            headers = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
            if fault == "truncate" and resp.status == 200 and len(data) >= 2:
                self._answer(resp.status, headers, data, cut=len(data) // 2)
                return
            # A HEAD answer announces the object's length, with no body.
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self._answer(resp.status, headers, data, length=length)

        def _not_found(self, action, service):
            if service == "s3":
                status, data = 404, S3_ERROR.format(code="NoSuchBucket").encode()
            else:
                code, status = NOT_FOUND.get(action, ("NotFound", 400))
                template = EC2_ERROR if service == "ec2" else QUERY_ERROR
                message = f"injected by moto_shim.py: {action} does not see the new resource yet"
                data = template.format(code=code, message=message).encode()
            self._answer(status, {"Content-Type": "text/xml"}, data)
            print(f"NOTFOUND {action}", flush=True)

        def _answer(self, status, headers, data, cut=None, length=None):
            self.send_response_only(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data if cut is None else data[:cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _proxy

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
