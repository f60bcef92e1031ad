"""{{name}}: a Beehive event handler. Routes `activity` events by the `type` field of their
body: `signup` to `signups`, `purchase` to `purchases` (the body unchanged, with the meta
`source-id`). Bad input (no body, no string `type`, a type with no route) is dead-lettered
with the reason; a refused publish fails the batch, which is retried.

Build: `bash build.sh` (componentize-py; the SDK is in sdk/, the WIT contract in wit/).
Test: see README.md. Keep imports at the top: componentize-py snapshots the module after
importing it, and the sandbox has no filesystem to import anything from later.
"""

import json
from typing import List

import beehive_guest as bh

# Where each `type` goes.
ROUTES = {"signup": "signups", "purchase": "purchases"}


def route(event: bh.Event) -> bh.Outcome:
    """Publishes one event to its route; BadInput is dead-lettered by `bh.each`."""
    if event.body is None:
        raise bh.BadInput("no body")
    body = event.unserialize()
    kind = body.get("type") if isinstance(body, dict) else None
    if not isinstance(kind, str):
        raise bh.BadInput('expected a map with a string "type"')
    stream = ROUTES.get(kind)
    if stream is None:
        raise bh.BadInput(f"unknown type {json.dumps(kind, ensure_ascii=False)}")
    # A refusal raises PublishError, which is not bad input: it fails (and retries) the
    # whole batch.
    bh.publish_raw(stream, event.body, [("source-id", event.id)])
    bh.info(f"{event.id} {kind} -> {stream}")
    return bh.ack()


def handle(events: List[bh.Event]) -> List[bh.Outcome]:
    return bh.each(events, route)


Handler = bh.export(handle)
