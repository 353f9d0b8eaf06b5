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
                    known point.

It also works around one moto 5.2 bug the Rust SDK trips on and boto3 does not: moto names the
XML root of GetBucketVersioning's answer `GetBucketVersioningResponse` where S3 sends
`VersioningConfiguration` (the element the SDK checks). Nothing else is rewritten.

Usage: moto_shim.py --port PORT --upstream http://127.0.0.1:MOTO_PORT [--fail A=N[:CODE]]... [--hang A]...
Prints "READY <port>" when it listens (--port 0 picks a free port).
"""

import argparse
import http.client
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

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--fail", action="append", default=[])
    parser.add_argument("--hang", action="append", default=[])
    args = parser.parse_args()

    upstream = urllib.parse.urlparse(args.upstream)
    failures = {}
    codes = {}
    for spec in args.fail:
        action, rest = spec.split("=", 1)
        count, _, code = rest.partition(":")
        failures[action] = int(count)
        codes[action] = code or None
    hangs = set(args.hang)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _proxy(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            form = {}
            if body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            action = (form.get("Action") or [""])[0]

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
            self._answer(resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}, data)

        def _answer(self, status, headers, data):
            self.send_response_only(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

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
