"""The allocator's pure core: a deterministic fold of one command partition's log.

    state = new_state()
    state, outputs = decide(state, command)   # command: a decoded envelope (struct or model)

No clock, no randomness, no I/O. See `rules.py` for the rules and for the
modules that apply them.
"""

from .eta import order_etas
from .ids import NAMESPACE, SOURCE, output_id, placed_micros, shipment_id
from .invariants import InvariantViolation, check_invariants, invariant_problems
from .memory import DEFAULT_DEDUP_WINDOW, BoundedWindow
from .rules import UnknownCommand, decide, fold
from .state import (
    AllocatorState,
    Inbound,
    Line,
    Order,
    SkuState,
    new_state,
)

__all__ = [
    "DEFAULT_DEDUP_WINDOW",
    "NAMESPACE",
    "SOURCE",
    "AllocatorState",
    "BoundedWindow",
    "Inbound",
    "InvariantViolation",
    "Line",
    "Order",
    "SkuState",
    "UnknownCommand",
    "check_invariants",
    "decide",
    "fold",
    "invariant_problems",
    "new_state",
    "order_etas",
    "output_id",
    "placed_micros",
    "shipment_id",
]
