"""Decodes every batch of wit/vectors/ and compares it with its JSON (see the README
there); every input of wit/vectors/invalid/ must be refused with the named error.

    python3 -m unittest discover -s guest-sdk/python/tests
"""

import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
VECTORS = os.path.join(HERE, "..", "..", "..", "wit", "vectors")

import beehive_batch  # noqa: E402


def vectors(folder):
    names = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".bin"))
    for name in names:
        with open(os.path.join(folder, name + ".bin"), "rb") as f:
            data = f.read()
        with open(os.path.join(folder, name + ".json"), encoding="utf-8") as f:
            expected = json.load(f)
        yield name, data, expected


def as_json(event):
    return {
        "id": event.id,
        "stream": event.stream,
        "deliveries": event.deliveries,
        "body": None if event.body is None else event.body.hex(),
        "meta": [[k, v] for k, v in event.meta],
    }


class Vectors(unittest.TestCase):
    def test_every_vector_decodes_to_its_json(self):
        seen = []
        for name, data, expected in vectors(VECTORS):
            seen.append(name)
            with self.subTest(vector=name):
                events = beehive_batch.decode(data)
                self.assertEqual(beehive_batch.count(data), len(expected["events"]))
                self.assertEqual(len(events), len(expected["events"]))
                for i, (event, want) in enumerate(zip(events, expected["events"])):
                    self.assertEqual(as_json(event), want, f"{name}: event {i}")
        for name in ["empty", "empty-meta", "large-body", "many-events", "mixed", "no-body",
                     "redelivered", "unicode"]:
            self.assertIn(name, seen)

    def test_every_invalid_input_is_refused_with_its_error(self):
        seen = 0
        for name, data, expected in vectors(os.path.join(VECTORS, "invalid")):
            seen += 1
            with self.subTest(vector=name):
                with self.assertRaises(ValueError) as refused:
                    beehive_batch.decode(data)
                self.assertIn(expected["error"], str(refused.exception))
                self.assertTrue(str(refused.exception).startswith("malformed event batch at byte "))
        self.assertGreaterEqual(seen, 5)


if __name__ == "__main__":
    unittest.main()
