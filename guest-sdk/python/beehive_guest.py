"""Write Beehive handlers in Python (componentize-py, world `consumer` of wit/beehive.wit).

A handler is a function from a list of events to one outcome per event; `export` makes
it the component's `handler` export (componentize-py looks for a class named `Handler` in
the app module):

    import beehive_guest as bh

    def handle(events: list[bh.Event]) -> list[bh.Outcome]:
        def decide(event: bh.Event) -> bh.Outcome:
            order = event.unserialize()           # BadInput when it does not decode
            if not isinstance(order, dict) or "total" not in order:
                raise bh.BadInput("expected a map with a total")
            bh.publish("receipts", {"order": event.id}, [("of", event.id)])
            bh.info(f"{event.id} ok")
            return bh.ack()
        return bh.each(events, decide)

    Handler = bh.export(handle)

- `each(events, decide)`: BadInput dead-letters that event with its message; any other
  exception fails (retries) the whole batch.
- `ack()`, `retry(reason)`, `dead_letter(reason)`: the outcomes.
- `publish(stream, value, meta)`: `value` encoded as MessagePack (see beehive_msgpack);
  `publish_meta`, `publish_raw`; a refusal raises PublishError. Publishes are committed
  with the batch's acknowledgement: if the batch fails, nothing is published.
- `trace`, `debug`, `info`, `warn`, `error`: the host's log.
- `export(handle)`: decodes the batch, and turns an exception into the batch's error
  string (`"<Type>: <message>"` then the traceback) instead of a trap.

Outside a component (unit tests), `use_fake_host()` records publishes and logs.

Keep imports at the top of the app module: componentize-py snapshots the app after
importing it, and the sandbox grants no filesystem to import anything later from.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from beehive_batch import BadInput, Event, decode
import beehive_msgpack

# The bindings componentize-py generates, imported now: componentize-py snapshots the app
# after importing it, and a module imported later, while handling a batch, would have to be
# read from a filesystem the sandbox does not grant. Outside a component they are missing.
try:
    from componentize_py_types import Err as _Err
    from wit_world import exports as _exports
    from wit_world.imports import logging as _logging
    from wit_world.imports import publisher as _publisher
    from wit_world.imports import types as _types
except ImportError:
    _Err = _exports = _logging = _publisher = _types = None

__all__ = [
    "BadInput", "Event", "FakeHost", "Meta", "Outcome", "PublishError", "ack", "dead_letter",
    "debug", "decode", "each", "error", "export", "info", "log", "publish", "publish_meta",
    "publish_raw", "retry", "trace", "use_fake_host", "warn",
]

Meta = Union[Sequence[Tuple[str, str]], Mapping[str, str]]
"""Metadata: (key, value) pairs in order, or a dict (in its order)."""

Outcome = Any
"""An outcome: `wit_world.imports.types.Outcome` inside a component (see `ack`)."""


class PublishError(Exception):
    """The host refused a publish (a stream outside the group's `publish` allow-list, the
    reserved key `s`, an event with neither body nor metadata, too many publishes), or the
    value does not encode as MessagePack."""


# --- the host: componentize-py's bindings inside a component, a fake outside ---

class _Bindings:
    """The host through componentize-py's bindings."""

    def __init__(self) -> None:
        if _publisher is None:
            raise RuntimeError("not running inside a component: call beehive_guest.use_fake_host() first")
        self.Err = _Err
        self.logging = _logging
        self.publisher = _publisher
        self.types = _types
        self.levels = {
            "trace": _logging.Level.TRACE, "debug": _logging.Level.DEBUG,
            "info": _logging.Level.INFO, "warn": _logging.Level.WARN,
            "error": _logging.Level.ERROR,
        }

    def publish(self, stream: str, body: Optional[bytes], meta: List[Tuple[str, str]]) -> None:
        try:
            self.publisher.publish(stream, body, meta)
        except self.Err as refused:
            raise PublishError(f"publish to {stream}: {refused.value}") from None

    def log(self, level: str, message: str) -> None:
        self.logging.log(self.levels[level], message)

    def ack(self) -> Outcome:
        return self.types.Outcome_Ack()

    def retry(self, reason: str) -> Outcome:
        return self.types.Outcome_Retry(reason)

    def dead_letter(self, reason: str) -> Outcome:
        return self.types.Outcome_DeadLetter(reason)

    def fail(self, message: str) -> BaseException:
        return self.Err(message)


class _Outcome:
    """Outcomes outside a component: compare by kind and reason."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Optional[str] = None) -> None:
        self.kind = kind
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Outcome) and (self.kind, self.value) == (other.kind, other.value)

    def __repr__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}({self.value!r})"


class BatchFailed(Exception):
    """Outside a component: what `export`'s handle_events raises where a component returns
    the error string."""

    @property
    def value(self) -> str:
        return str(self.args[0])


class FakeHost:
    """Stands in for the host outside a component: checks publishes as the host does and
    records them, with the log lines."""

    def __init__(self, allow: Optional[Iterable[str]] = None) -> None:
        self.allow = None if allow is None else set(allow)
        self.published: List[Tuple[str, Optional[bytes], List[Tuple[str, str]]]] = []
        self.logs: List[Tuple[str, str]] = []

    def publish(self, stream: str, body: Optional[bytes], meta: List[Tuple[str, str]]) -> None:
        if self.allow is not None and stream not in self.allow:
            reason = f"stream {stream} is not in this group's publish allow-list"
        elif body is None and not meta:
            reason = f"event for stream {stream} has neither body nor metadata"
        elif any(k in ("s", "") for k, _ in meta):
            key = next(k for k, _ in meta if k in ("s", ""))
            why = "the key s is reserved for the body" if key == "s" else "keys may not be empty"
            reason = f"invalid metadata key {key!r} for stream {stream}: {why}"
        else:
            self.published.append((stream, body, list(meta)))
            return
        raise PublishError(f"publish to {stream}: {reason}")

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def ack(self) -> Outcome:
        return _Outcome("ack")

    def retry(self, reason: str) -> Outcome:
        return _Outcome("retry", reason)

    def dead_letter(self, reason: str) -> Outcome:
        return _Outcome("dead-letter", reason)

    def fail(self, message: str) -> BaseException:
        return BatchFailed(message)


_host: Any = _Bindings() if _publisher is not None else None


def _the_host() -> Any:
    global _host
    if _host is None:
        _host = _Bindings()
    return _host


def use_fake_host(allow: Optional[Iterable[str]] = None) -> FakeHost:
    """Replaces the host with a FakeHost (for tests outside a component) and returns it;
    `allow` is the publish allow-list (None: every stream)."""
    global _host
    _host = FakeHost(allow)
    return _host


# --- outcomes ---

def ack() -> Outcome:
    """Handled: acknowledge the event."""
    return _the_host().ack()


def retry(reason: object) -> Outcome:
    """Not now: leave the event pending; the host dead-letters it after `max-deliveries`."""
    return _the_host().retry(str(reason))


def dead_letter(reason: object) -> Outcome:
    """Never: move the event to the group's dead-letter stream with `reason`."""
    return _the_host().dead_letter(str(reason))


def each(events: Sequence[Event], decide: Callable[[Event], Outcome]) -> List[Outcome]:
    """`decide(event)` for every event: BadInput dead-letters that event with its message;
    any other exception propagates and fails (retries) the whole batch."""
    outcomes = []
    for event in events:
        try:
            outcomes.append(decide(event))
        except BadInput as bad:
            outcomes.append(dead_letter(bad))
    return outcomes


# --- publishing ---

def _pairs(meta: Meta) -> List[Tuple[str, str]]:
    items = meta.items() if isinstance(meta, Mapping) else meta
    return [(str(k), str(v)) for k, v in items]


def publish(stream: str, value: Any, meta: Meta = ()) -> None:
    """Publishes `value`, encoded as MessagePack, with `meta` to `stream`. PublishError when
    the host refuses it or the value does not encode."""
    try:
        body = beehive_msgpack.packb(value)
    except beehive_msgpack.MessagePackError as e:
        raise PublishError(f"publish to {stream}: {e}") from None
    _the_host().publish(stream, body, _pairs(meta))


def publish_meta(stream: str, meta: Meta) -> None:
    """Publishes a metadata-only event."""
    _the_host().publish(stream, None, _pairs(meta))


def publish_raw(stream: str, body: Optional[bytes], meta: Meta = ()) -> None:
    """Publishes already encoded MessagePack bytes (None: metadata only)."""
    _the_host().publish(stream, None if body is None else bytes(body), _pairs(meta))


# --- logging ---

def log(level: str, message: str) -> None:
    """One line in the host's log: level is trace, debug, info, warn or error."""
    _the_host().log(level, message)


def trace(message: str) -> None:
    log("trace", message)


def debug(message: str) -> None:
    log("debug", message)


def info(message: str) -> None:
    log("info", message)


def warn(message: str) -> None:
    log("warn", message)


def error(message: str) -> None:
    log("error", message)


# --- the export ---

def describe(e: BaseException) -> str:
    """`<Type>: <message>` then the traceback: the batch error of an exception."""
    return f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e)).rstrip()


def export(handle: Callable[[List[Event]], List[Outcome]]) -> type:
    """The class componentize-py exports as `handler` (assign it to `Handler` in the app
    module): decodes the batch, calls `handle(events)`, and turns any exception into the
    batch's error string (`describe`) instead of a trap."""
    base: type = _exports.Handler if _exports is not None else object

    class Handler(base):  # type: ignore[misc, valid-type]
        def handle_events(self, batch: bytes) -> List[Outcome]:
            try:
                return list(handle(decode(batch)))
            except Exception as e:  # noqa: BLE001 - every failure becomes the batch error
                if _Err is not None and isinstance(e, _Err):
                    raise
                raise _the_host().fail(describe(e)) from None

    Handler.__name__ = Handler.__qualname__ = "Handler"
    return Handler
