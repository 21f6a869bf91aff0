"""An independent ISO 8583 client for the interoperability test.

It speaks the canonical upstream protocol of DESIGN.md with nothing from
this project: Python's ssl (mutual TLS) and pyiso8583's `default_ascii`
spec, a 2-byte big-endian length in front of each message. It pipelines
several credit transfers and an echo on one connection, matches the answers
on (MTI class, F11, F37, F41) whatever their order, and prints one JSON
object per answer. Exit status 0 when every request got exactly one answer.
"""

import argparse
import json
import socket
import ssl
import struct
import sys

import iso8583
from iso8583.specs import default_ascii as spec


def frame(msg: dict) -> bytes:
    raw, _ = iso8583.encode(dict(msg), spec)
    return struct.pack(">H", len(raw)) + bytes(raw)


def read_exact(sock, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed by the switch")
        buf += chunk
    return buf


def main() -> int:
    ap = argparse.ArgumentParser()
    for name in ("host", "port", "ca", "cert", "key", "server-name", "bank"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--count", type=int, default=5)
    a = ap.parse_args()

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3

    requests = {}
    for i in range(a.count):
        stan = "%06d" % (700 + i)
        rrn = "PY%010d" % (700 + i)
        requests[("2", stan, rrn, "PYTERM01")] = {
            "t": "0200", "3": "400000", "4": "%012d" % (1000 + i), "7": "1123101500",
            "11": stan, "12": "181500", "13": "1123", "32": "777001", "37": rrn,
            "41": "PYTERM01", "42": "PYMERCHANT00001", "49": "344", "100": a.bank,
            "102": "123456789012", "103": "987654321098",
        }
    requests[("8", "000999", "", "")] = {"t": "0800", "7": "1123101500", "11": "000999", "70": "301"}

    with socket.create_connection((a.host, int(a.port)), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=a.server_name) as sock:
            # Everything in flight at once: the switch may answer in any order.
            sock.sendall(b"".join(frame(m) for m in requests.values()))
            pending = dict(requests)
            while pending:
                (length,) = struct.unpack(">H", read_exact(sock, 2))
                answer, _ = iso8583.decode(bytearray(read_exact(sock, length)), spec)
                key = (answer["t"][1], answer.get("11", ""), answer.get("37", ""), answer.get("41", ""))
                req = pending.pop(key, None)
                if req is None:
                    print(json.dumps({"error": "unmatched or duplicate answer", "key": key}))
                    return 1
                print(json.dumps({
                    "request_mti": req["t"], "mti": answer["t"], "f39": answer.get("39"),
                    "f7_echoed": answer.get("7") == req.get("7"),
                    "f11": answer.get("11"),
                }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
