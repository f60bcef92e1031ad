"""Router, in Python: the same contract as examples/router (Rust) and examples/js-router.

Reads the `version` tag (1 or missing: v1, 2: v2), decodes the v1 (`{"color", "price"}`)
or v2 (`{"name", "price_cents"}`) body and republishes `{"color", "price_cents"}` to
`colors-normalized` with meta `source-id`, `source-version` and `router=python`. Unknown
versions and bodies that do not decode are dead-lettered with the reason; a refused
publish fails (and retries) the batch.

Build: ./build.sh (componentize-py with ../../guest-sdk/python on its path, for
beehive_guest, beehive_batch and beehive_msgpack)
"""

import json
import math
from typing import Any, Dict, List

import beehive_guest as bh

TARGET = "colors-normalized"


def round_to_i64(x: float) -> int:
    """`x.round() as i64` in Rust: halves away from zero, NaN to 0, saturating at the i64
    bounds."""
    if math.isnan(x):
        return 0
    if x >= 2.0**63:
        return 2**63 - 1
    if x < -(2.0**63):
        return -(2**63)
    a = abs(x)
    whole = math.floor(a)
    n = whole + 1 if a - whole >= 0.5 else whole
    return int(-n if x < 0 else n)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def body_of(event: bh.Event, version: str) -> Dict[Any, Any]:
    try:
        body = event.unserialize()
    except bh.BadInput as e:
        raise bh.BadInput(f"cannot decode v{version} body: {e}") from None
    if not isinstance(body, dict):
        raise bh.BadInput(f"cannot decode v{version} body: expected a map, got {type(body).__name__}")
    return body


def normalize(event: bh.Event) -> Dict[str, Any]:
    version = event.tag("version")
    if version in ("1", ""):
        body = body_of(event, "1")
        if not isinstance(body.get("color"), str) or not is_number(body.get("price")):
            raise bh.BadInput("cannot decode v1 body: expected color (string) and price (number)")
        return {"color": body["color"], "price_cents": round_to_i64(float(body["price"]) * 100)}
    if version == "2":
        body = body_of(event, "2")
        cents = body.get("price_cents")
        if not isinstance(body.get("name"), str) or not isinstance(cents, int) or isinstance(cents, bool):
            raise bh.BadInput("cannot decode v2 body: expected name (string) and price_cents (integer)")
        return {"color": body["name"], "price_cents": cents}
    raise bh.BadInput(f"unknown version {json.dumps(version, ensure_ascii=False)}")


def route(event: bh.Event) -> bh.Outcome:
    normalized = normalize(event)
    meta = [("source-id", event.id), ("source-version", event.tag("version")), ("router", "python")]
    bh.publish(TARGET, normalized, meta)  # a refusal raises PublishError: the batch fails
    return bh.ack()


def handle(events: List[bh.Event]) -> List[bh.Outcome]:
    outcomes = bh.each(events, route)
    bh.info(f"python router handled {len(events)} events")
    return outcomes


Handler = bh.export(handle)
