"""The SDK's helpers outside a component, with the fake host.

    python3 -m unittest discover -s guest-sdk/python/tests
"""

import os
import struct
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import beehive_guest as bh  # noqa: E402
import beehive_msgpack as mp  # noqa: E402


def batch(*events):
    """Packs (id, stream, body, meta, deliveries) tuples as the host does."""
    def s(text):
        data = text.encode("utf-8")
        return struct.pack("<I", len(data)) + data

    out = struct.pack("<I", len(events))
    for id, stream, body, meta, deliveries in events:
        out += struct.pack("<I", deliveries) + s(id) + s(stream)
        out += b"\x00" if body is None else b"\x01" + struct.pack("<I", len(body)) + body
        out += struct.pack("<I", len(meta))
        for k, v in meta:
            out += s(k) + s(v)
    return out


class MessagePack(unittest.TestCase):
    def test_round_trips(self):
        for value in [None, True, False, 0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1,
                      -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63,
                      1.5, -0.0, "", "a1", "é" * 40, "x" * 70000, b"", b"\x00\xff" * 200,
                      [], [1, [2, [3]]], list(range(20)), {}, {"a": 1, 2: "b"},
                      {str(i): i for i in range(20)}, mp.Ext(-1, b"\x00" * 4), mp.Ext(5, b"abc")]:
            with self.subTest(value=repr(value)[:40]):
                self.assertEqual(mp.unpackb(mp.packb(value)), value)

    def test_smallest_encodings_as_rmp_serde_writes_them(self):
        self.assertEqual(mp.packb("a1"), b"\xa2a1")
        self.assertEqual(mp.packb(1234), b"\xcd\x04\xd2")
        self.assertEqual(mp.packb(-1), b"\xff")
        self.assertEqual(mp.packb({"color": "red", "price_cents": 1234}),
                         b"\x82\xa5color\xa3red\xabprice_cents\xcd\x04\xd2")

    def test_bad_input_is_refused(self):
        for data in [b"", b"\xc1", b"\xa5ab", b"\x92\x01", b"\x01\x02", b"\xdd\xff\xff\xff\xff",
                     b"\xa1\xff", b"\x91" * 1000 + b"\x00"]:
            with self.subTest(data=data[:8]):
                with self.assertRaises(mp.MessagePackError):
                    mp.unpackb(data)
        with self.assertRaises(mp.MessagePackError):
            mp.packb(object())
        with self.assertRaises(mp.MessagePackError):
            mp.packb(2**64)


class Helpers(unittest.TestCase):
    def setUp(self):
        self.host = bh.use_fake_host(allow=["out"])

    def test_each_dead_letters_bad_input_and_propagates_the_rest(self):
        events = bh.decode(batch(("1-0", "in", mp.packb({"n": 1}), [("v", "1")], 1),
                                 ("1-1", "in", b"\xc1", [], 2),
                                 ("1-2", "in", None, [("v", "1")], 1)))

        def decide(event):
            body = event.unserialize()
            bh.publish("out", body, [("of", event.id)])
            bh.info(f"{event.id} ok")
            return bh.ack()

        outcomes = bh.each(events, decide)
        self.assertEqual(outcomes, [bh.ack(), bh.dead_letter("unsupported MessagePack type 0xc1 at byte 0"),
                                    bh.dead_letter("the event has no body")])
        self.assertEqual(self.host.published, [("out", mp.packb({"n": 1}), [("of", "1-0")])])
        self.assertEqual(self.host.logs, [("info", "1-0 ok")])
        self.assertTrue(events[1].is_redelivery)

        def refused(event):
            bh.publish("elsewhere", 1)
            return bh.ack()

        with self.assertRaises(bh.PublishError) as e:
            bh.each(events[:1], refused)
        self.assertEqual(str(e.exception),
                         "publish to elsewhere: stream elsewhere is not in this group's publish allow-list")

    def test_publish_checks_like_the_host(self):
        with self.assertRaises(bh.PublishError):
            bh.publish_meta("out", [])
        with self.assertRaises(bh.PublishError) as e:
            bh.publish_meta("out", {"s": "1"})
        self.assertIn("reserved", str(e.exception))
        with self.assertRaises(bh.PublishError):
            bh.publish("out", object())
        bh.publish_meta("out", {"a": "1", "b": 2})
        bh.publish_raw("out", b"\xc0")
        self.assertEqual(self.host.published, [("out", None, [("a", "1"), ("b", "2")]),
                                               ("out", b"\xc0", [])])

    def test_tags(self):
        [event] = bh.decode(batch(("1-0", "in", None, [("a", "1"), ("a", "2")], 1)))
        self.assertEqual(event.tag("a"), "1")
        self.assertEqual(event.tag("b"), "")
        self.assertIsNone(event.try_tag("b"))
        with self.assertRaises(bh.BadInput):
            event.require_tag("b")
        self.assertEqual(bh.retry(3), bh.retry("3"))


class Export(unittest.TestCase):
    def setUp(self):
        self.host = bh.use_fake_host()

    def test_outcomes_come_back(self):
        handler = bh.export(lambda events: [bh.ack() for _ in events])()
        self.assertEqual(handler.handle_events(batch(("1-0", "s", None, [("k", "v")], 1))), [bh.ack()])

    def test_an_exception_becomes_the_batch_error_with_its_traceback(self):
        def handle(events):
            raise KeyError("missing")

        with self.assertRaises(bh.BatchFailed) as failed:
            bh.export(handle)().handle_events(batch())
        message = failed.exception.value
        self.assertTrue(message.startswith("KeyError: 'missing'\nTraceback (most recent call last):"), message)
        self.assertIn("in handle", message)

    def test_a_malformed_batch_is_the_batch_error(self):
        with self.assertRaises(bh.BatchFailed) as failed:
            bh.export(lambda events: [])().handle_events(b"\x01\x00")
        self.assertTrue(failed.exception.value.startswith(
            "ValueError: malformed event batch at byte 0: truncated"))


if __name__ == "__main__":
    unittest.main()
