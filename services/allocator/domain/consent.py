"""The delay-consent rule (`FULFIL_DELAY_CONSENT=ftc`), after the US Mail, Internet, or
Telephone Order Merchandise Rule (16 CFR Part 435). Not legal advice.

Per backordered line:

- the promised date is the first ETA the customer was told, or 30 days after
  `placed_at` when the first notice had no date;
- the first time the ETA moves past it to a definite date at most 30 days
  later, the notice offers consent or cancellation (`offered`) and silence is
  consent: the new date becomes the promised one;
- a second delay, a first delay to no date or to more than 30 days later, or a
  delay past a date the customer agreed to, needs the customer's consent
  (`required`): without `BackorderConsentGiven` the backordered part is
  cancelled on the first clock tick after the promised date (reason
  `no_consent`). A delay first known on or after the promised date leaves the
  customer the rest of that day, never a deadline already past;
- consent (`given`) makes the current ETA the promised date (no date: the
  customer agreed to wait without one, and no deadline follows);
- the ETA coming back to the promised date or earlier lifts the requirement
  (the delay was told, so the line is `offered` again).

Only a move of the ETA is judged: a line told no date at placement, whose date never
comes, is not judged by the calendar alone (the notifier's reminders tell the customer
it still has no date).

Time is the log's: only `ClockTicked` moves today and only it cancels.
"""

from __future__ import annotations

from datetime import date, timedelta

from .context import Context
from .state import Line, Order, SkuState
from .stock import cancel_units, fill, settle

CONSENT_WINDOW = timedelta(days=30)  # 16 CFR 435.2(a)(1)(ii) and (b)(1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY_MICROS = 86_400_000_000


def placed_day(order: Order) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + order.placed_us // _DAY_MICROS)


def review(ctx: Context, order: Order, moved: list[Line]) -> None:
    """After the order's reported ETAs are final for this command: promise what is told
    for the first time, judge the lines whose ETA moved."""
    for line in order.lines:
        if line.backordered and line.promised is None and line.consent is None:
            line.promised = line.eta or placed_day(order) + CONSENT_WINDOW  # first told now
    due = False
    for line in moved:
        if line.backordered and line.promised is not None:
            _judge(line, ctx.state.today)
            due = due or line.consent == "required"
    if due:
        ctx.state.consent_due[order.key] = None


def _judge(line: Line, today: date | None) -> None:
    promised = line.promised
    assert promised is not None
    eta = line.eta
    if eta is not None and eta <= promised:
        if line.consent == "required":
            line.consent = "offered"
        return
    if line.consent is None and eta is not None and eta <= promised + CONSENT_WINDOW:
        line.consent = "offered"
        line.promised = eta
    elif line.consent != "required":
        line.consent = "required"
        if today is not None and promised < today:
            line.promised = today


def give(line: Line) -> bool:
    """Record the customer's consent to the line's current ETA; False if none was asked."""
    if line.consent == "required":
        line.promised = line.eta
    elif line.consent != "offered":
        return False
    line.consent = "given"
    return True


def enforce(ctx: Context, today: date) -> None:
    """Cancel the backordered part of lines whose consent did not come by the promised date."""
    state = ctx.state
    freed: dict[SkuState, None] = {}
    for key in list(state.consent_due):
        order = state.orders.get(key)
        waiting = [] if order is None else [ln for ln in order.lines if _awaiting(ln)]
        if order is None or not waiting:
            del state.consent_due[key]
            continue
        late = [ln for ln in waiting if ln.promised is not None and ln.promised < today]
        if not late:
            continue
        for line in late:
            cancel_units(ctx, line, line.backordered, freed)
        ctx.record("OrderCancellationProcessed", order, "no_consent").lines = late
        ctx.eta_orders[order] = None
        ctx.maybe_closed[order] = None
        if order.complete:
            ctx.complete_check[order] = None
        if len(late) == len(waiting):
            del state.consent_due[key]
    for sku in freed:
        fill(ctx, sku)
    settle(ctx)


def _awaiting(line: Line) -> bool:
    return line.consent == "required" and line.backordered > 0
