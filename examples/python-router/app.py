"""Router, in Python: the same contract as examples/router (Rust).

Reads the `version` tag, decodes the v1 (`{"color", "price"}`) or v2
(`{"name", "price_cents"}`) body and republishes `{"color", "price_cents"}` to
`colors-normalized` with meta `source-id`, `source-version` and `router=python`.
Unknown versions and bodies that do not decode are dead-lettered with the reason.

Build: ./build.sh (componentize-py with ../../guest-sdk/python on its path, for beehive_batch)
"""

from typing import List

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import logging, publisher
from wit_world.imports.types import Outcome, Outcome_Ack, Outcome_DeadLetter

import msgpack_lite
from beehive_batch import Event, decode

TARGET = "colors-normalized"


def normalize(event: Event) -> dict:
    version = event.tag("version")
    if event.body is None:
        raise ValueError("the event has no body")
    try:
        body = msgpack_lite.unpackb(event.body)
    except ValueError as e:
        raise ValueError(f"cannot decode body: {e}")
    if not isinstance(body, dict):
        raise ValueError(f"expected a map body, got {type(body).__name__}")
    if version in ("1", ""):
        if not isinstance(body.get("color"), str) or not isinstance(body.get("price"), (int, float)):
            raise ValueError("cannot decode v1 body: expected color (string) and price (number)")
        return {"color": body["color"], "price_cents": int(round(body["price"] * 100))}
    if version == "2":
        if not isinstance(body.get("name"), str) or not isinstance(body.get("price_cents"), int):
            raise ValueError("cannot decode v2 body: expected name (string) and price_cents (integer)")
        return {"color": body["name"], "price_cents": body["price_cents"]}
    raise ValueError(f"unknown version {version!r}")


class Handler(exports.Handler):
    def handle_events(self, batch: bytes) -> List[Outcome]:
        events = decode(batch)
        outcomes: List[Outcome] = []
        for event in events:
            try:
                normalized = normalize(event)
            except ValueError as reason:
                outcomes.append(Outcome_DeadLetter(str(reason)))
                continue
            meta = [("source-id", event.id), ("source-version", event.tag("version")), ("router", "python")]
            try:
                publisher.publish(TARGET, msgpack_lite.packb(normalized), meta)
            except Err as refused:
                # A refused publish is a configuration error: fail (and retry) the batch.
                raise Err(f"publish to {TARGET} refused: {refused.value}")
            outcomes.append(Outcome_Ack())
        logging.log(logging.Level.INFO, f"python router handled {len(events)} events")
        return outcomes
