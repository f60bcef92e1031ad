"""The benchmark's trivial Python handler: acknowledges every event (scenario C5).

Build: bash scripts/build-python bench/python-noop target/bench/python-noop.wasm
"""

from typing import List

from wit_world import exports
from wit_world.imports.types import Outcome, Outcome_Ack

import beehive_batch

ACK = Outcome_Ack()


class Handler(exports.Handler):
    def handle_events(self, batch: bytes) -> List[Outcome]:
        return [ACK] * beehive_batch.count(batch)
