"""The router's contract outside a component, with the SDK's fake host (the same cases as
tests/tests/examples.rs runs on the built component):

    python3 -m unittest discover -s examples/python-router -p 'test_*.py'
"""

import os
import struct
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "guest-sdk", "python")]

import app  # noqa: E402
import beehive_guest as bh  # noqa: E402
import beehive_msgpack as mp  # noqa: E402


def batch(*events):
    def s(text):
        data = text.encode("utf-8")
        return struct.pack("<I", len(data)) + data

    out = struct.pack("<I", len(events))
    for id, body, meta in events:
        out += struct.pack("<I", 1) + s(id) + s("colors")
        out += b"\x00" if body is None else b"\x01" + struct.pack("<I", len(body)) + body
        out += struct.pack("<I", len(meta))
        for k, v in meta:
            out += s(k) + s(v)
    return out


class Router(unittest.TestCase):
    def test_normalizes_versions_and_dead_letters_the_rest(self):
        host = bh.use_fake_host(allow=["colors-normalized"])
        outcomes = app.Handler().handle_events(batch(
            ("1-0", mp.packb({"color": "red", "price": 12.34}), [("version", "1")]),
            ("1-1", mp.packb({"name": "blue", "price_cents": 99}), [("version", "2")]),
            ("1-2", mp.packb({"name": "green", "price_cents": 1}), [("version", "3")]),
            ("1-3", b"\xc1\xff", [("version", "1")]),
            ("1-4", mp.packb({"color": "half", "price": 0.125}), []),
            ("1-5", None, [("version", "2")]),
            ("1-6", mp.packb({"color": "dear", "price": 1e300}), [("version", "1")]),
        ))
        self.assertEqual(outcomes[:2], [bh.ack(), bh.ack()])
        self.assertEqual(outcomes[2], bh.dead_letter('unknown version "3"'))
        self.assertTrue(outcomes[3].value.startswith("cannot decode v1 body: "), outcomes[3])
        self.assertEqual(outcomes[4], bh.ack())
        self.assertEqual(outcomes[5], bh.dead_letter("cannot decode v2 body: the event has no body"))
        self.assertEqual([(s, mp.unpackb(b), m) for s, b, m in host.published], [
            ("colors-normalized", {"color": "red", "price_cents": 1234},
             [("source-id", "1-0"), ("source-version", "1"), ("router", "python")]),
            ("colors-normalized", {"color": "blue", "price_cents": 99},
             [("source-id", "1-1"), ("source-version", "2"), ("router", "python")]),
            # 12.5 cents rounds away from zero, as Rust's f64::round does.
            ("colors-normalized", {"color": "half", "price_cents": 13},
             [("source-id", "1-4"), ("source-version", ""), ("router", "python")]),
            # Out of range saturates at i64::MAX, as `as i64` does.
            ("colors-normalized", {"color": "dear", "price_cents": 2**63 - 1},
             [("source-id", "1-6"), ("source-version", "1"), ("router", "python")]),
        ])
        self.assertEqual(host.logs, [("info", "python router handled 7 events")])

    def test_a_refused_publish_fails_the_batch(self):
        bh.use_fake_host(allow=[])
        with self.assertRaises(bh.BatchFailed) as failed:
            app.Handler().handle_events(batch(("1-0", mp.packb({"color": "red", "price": 1}), [])))
        self.assertIn("stream colors-normalized is not in this group's publish allow-list",
                      failed.exception.value)


if __name__ == "__main__":
    unittest.main()
