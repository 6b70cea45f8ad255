"""The allocator's pure core: `decide(state, command) -> (state, outputs)`.

A deterministic fold over one command partition's log. No clock, no
randomness, no I/O: the same log always yields byte-identical outputs, so a
restarted allocator can replay from a snapshot and recognise (by id) the
outputs it already wrote.

One command is applied in three steps, each in a module of its own:

1. the handler of its type (`handlers.py`, with the stock movements of
   `stock.py` and the queue of `queue.py`) changes stock, queues and orders
   and records *what happened* to each order (`context.Record`), without
   rendering anything yet;
2. ETAs of every SKU whose queue or scheduled supply changed are recomputed
   (`eta.py`); orders whose customer-facing ETA moved are collected;
3. the records are rendered (`outputs.py`) with the lines' final quantities
   and ETAs, then `BackorderEtaChanged` for lines no other output of this
   command already reports, then `StockPositionChanged` for each SKU whose
   position changed, sorted by (warehouse_id, sku). Ids: `ids.py`.

`decide` mutates `state` in place and returns it. If it raises (a bug, since
inputs are validated models), the state must be discarded and reloaded from
the last snapshot.

Choices the contract leaves open, made here:

- Business keys are scoped by warehouse: orders, receipts, adjustments and
  inbounds are identified by (warehouse_id, id). A cancel naming another
  warehouse than the order's is a cancel of an unknown order (tombstone),
  exactly as it would be if the two warehouses sat in different partitions,
  so decisions never depend on how warehouses are spread over partitions.
- Every unit that becomes free pays a shortfall first: receipts, positive
  adjustments and reservations released by a cancellation alike.
- A ship_complete order that gets more units reserved but is not yet fully
  covered produces no order output (nothing ships, nothing is decided for
  the customer); the SKU's StockPositionChanged shows the reservation, and a
  BackorderEtaChanged follows if the order's date moved.
- Lines an output reports: placement outputs - every line not wholly
  rejected; OrderRejected - the lines rejected by this event;
  BackorderAllocated - lines shipping now plus lines still open;
  OrderCancellationProcessed - every line; BackorderEtaChanged - the moved
  lines. Quantities are the line's totals after the whole command.
- An order gets at most one shipment per command (one shipment_id), even if
  several of its lines are filled.
- Order outputs come in the order things happened (queue order for fills),
  then BackorderEtaChanged per order, then StockPositionChanged by
  (warehouse_id, sku).
- EtaChangeCause.reason is only the supplier's delay reason; cancellation
  and adjustment reasons are other parties' business and are not passed on.
- A re-sent InboundScheduled is the inbound's full new definition: quantities
  are totals (already received units are not expected again) and SKUs it no
  longer lists are not coming.
- Duplicates change nothing however old they are (DESIGN §4). The envelope-id
  window is only a cheap first filter; the business keys are remembered for
  ever: an `OrderPlaced` whose (warehouse, order_id) was ever placed (open or
  closed) is ignored whatever its lines, as is a `StockReceived` /
  `StockAdjusted` with a known (warehouse, receipt_id / adjustment_id).
  `InboundScheduled`, `ShipmentDelayed` and `SkuPolicySet` have no id of
  their own: each one is a *statement* about an inbound or a SKU that later
  statements overrule, so re-applying an old one would undo the newer ones
  (an old InboundScheduled re-sent after a delay would move the date back).
  A statement is a duplicate when one with the same type, the same payload
  and the same `occurred_at` was already seen for that inbound / SKU
  (`statement_mark`). `occurred_at` is part of the identity because it is
  when the publisher said it: a redelivery or an upstream retry carries the
  original's, while the same payload stated anew (a delay retracted: the
  original ETA again) is a new statement and is applied. A retry that
  re-stamps `occurred_at` is applied again; that is harmless when it repeats
  the latest statement (re-applying it is a no-op), and indistinguishable
  from a real change otherwise. A ShipmentDelayed for an inbound not known
  yet changes nothing but is remembered too, so that its re-delivery after
  the InboundScheduled does not apply it late.
- `OrderCancelled` needs no key of its own: a cancelled order is closed, and a
  cancel of a never-placed order leaves a tombstone (until the placement,
  which it rejects), both remembered for ever, so a repeat finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.contract import OutputEvent

from . import alerts, handlers, lifecycle
from .context import AnyCommand, Context
from .eta import refresh
from .outputs import render, report
from .state import AllocatorState
from .stock import close_finished

HANDLERS = {**handlers.HANDLERS, **lifecycle.HANDLERS, **alerts.HANDLERS}


class UnknownCommand(ValueError):
    """`decide` was given something that is not an allocator input event."""


def decide(state: AllocatorState, command: AnyCommand) -> tuple[AllocatorState, list[OutputEvent]]:
    """Apply one parsed input envelope; return the (mutated) state and the outputs.

    Outputs are a function of the state and the command only: ids derive
    from the command's id and each output's position. An input whose id was
    seen within the dedup window, or whose business key was ever seen,
    changes nothing and yields nothing. Anything that is not an input
    envelope raises `UnknownCommand` before the state is touched.
    """
    handler = HANDLERS.get(getattr(command, "type", None))  # type: ignore[arg-type]
    if handler is None:
        raise UnknownCommand(f"not an allocator input: {getattr(command, 'type', command)!r}")
    if command.id in state.seen_events:
        return state, []  # the cheap first filter; business keys catch the rest
    state.seen_events.add(command.id)
    ctx = Context(state, command)
    handler(ctx, command)
    if ctx.eta_skus:
        refresh(ctx)
    records = report(ctx)
    if ctx.maybe_closed:
        close_finished(ctx)
    alerts.tell_alerts(ctx)
    return state, render(ctx, records)


def fold(
    commands: Iterable[AnyCommand], state: AllocatorState | None = None
) -> tuple[AllocatorState, list[OutputEvent]]:
    """Apply a sequence of commands to `state` (a new one if None); all outputs in order."""
    if state is None:
        state = AllocatorState()
    outputs: list[OutputEvent] = []
    for command in commands:
        state, produced = decide(state, command)
        outputs.extend(produced)
    return state, outputs
