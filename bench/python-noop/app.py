"""The benchmark's trivial Python handler: acknowledges every event (scenario C5).

Build: componentize-py -d ../../wit -w consumer componentize app -o python-noop.wasm
"""

from typing import List

from wit_world import exports
from wit_world.imports.types import Event, Outcome, Outcome_Ack

ACK = Outcome_Ack()


class Handler(exports.Handler):
    def handle_events(self, events: List[Event]) -> List[Outcome]:
        return [ACK] * len(events)
