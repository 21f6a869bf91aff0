#!/usr/bin/env python3
"""pyiso8583 as a differential oracle for codecs/tests/diff_pyiso8583.rs.

Reads one JSON document on stdin, answers one on stdout, so a whole test's
worth of messages costs a single interpreter start:

    in:  {"requests": [
            {"op": "encode", "spec": "default_ascii", "mti": "0200",
             "fields": {"2": "4761...", "52": "A1B2..."}},   # class b as hex
            {"op": "encode", "spec": "default", "mti": "0200",
             "fields_hex": {"2": "3437...", "52": "a1b2..."}},     # every value as hex
            {"op": "decode", "spec": "default", "hex": "30323030..."},
            {"op": "spec", "spec": "default"}
         ]}
    out: {"responses": [
            {"ok": true, "hex": "..."}                       # encode
            {"ok": true, "mti": "0200", "fields": {...},     # decode (b as upper hex)
             "fields_hex": {...}}                            # every value as hex
            {"ok": false, "kind": "DecodeError", "error": "..."}
            {"ok": true, "fields": {"2": {"len_type": 2, "max_len": 19,
                                          "data_enc": "ascii", "len_enc": "ascii"}}}
         ]}

Binary (data_enc "b") field values travel as hex strings both ways, which is
how pyiso8583 itself presents them. `fields_hex` carries every value as the
hex of its logical bytes (text encoded with the field's data_enc), so a caller
can compare wire layouts without knowing which fields the spec calls binary. Every request gets exactly one response,
in order; an exception never stops the batch.
"""

import json
import sys

import iso8583
import iso8583.specs

# Keys of a decoded dict that are not data elements 2..128.
NOT_FIELDS = {"h", "t", "p", "1"}


def spec_of(name):
    return getattr(iso8583.specs, name)


def encode(req):
    spec = spec_of(req["spec"])
    doc = {"t": req["mti"]}
    doc.update(req.get("fields", {}))
    for k, v in req.get("fields_hex", {}).items():
        enc = spec[k]["data_enc"]
        doc[k] = v.upper() if enc == "b" else bytes.fromhex(v).decode(enc)
    raw, _ = iso8583.encode(doc, spec_of(req["spec"]))
    return {"ok": True, "hex": bytes(raw).hex()}


def decode(req):
    spec = spec_of(req["spec"])
    doc, _ = iso8583.decode(bytes.fromhex(req["hex"]), spec)
    fields = {k: v for k, v in doc.items() if k not in NOT_FIELDS}
    fields_hex = {
        k: v.lower() if spec[k]["data_enc"] == "b" else v.encode(spec[k]["data_enc"]).hex()
        for k, v in fields.items()
    }
    return {"ok": True, "mti": doc["t"], "fields": fields, "fields_hex": fields_hex}


def layout(req):
    spec = spec_of(req["spec"])
    keep = ("len_type", "max_len", "data_enc", "len_enc")
    fields = {str(n): {k: spec[str(n)][k] for k in keep} for n in range(2, 129)}
    return {"ok": True, "fields": fields}


OPS = {"encode": encode, "decode": decode, "spec": layout}


def answer(req):
    try:
        return OPS[req["op"]](req)
    except Exception as e:  # noqa: BLE001 - the kind is reported, not hidden
        return {"ok": False, "kind": type(e).__name__, "error": str(e)}


def main():
    requests = json.load(sys.stdin)["requests"]
    json.dump({"responses": [answer(r) for r in requests]}, sys.stdout)


if __name__ == "__main__":
    main()
