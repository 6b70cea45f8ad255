"""Back-in-stock alerts: tell a customer once when a SKU can be ordered again.

A SKU is orderable when units are on the shelf, or when a new order's unit
would be accepted as a backorder (backorderable, not discontinued, within
its backorder limit and mode). An alert asked for an orderable SKU is told at
once. Each alert is told at most once and is then done; a cancelled alert is
done too, and its id is remembered for ever, so a request that arrives after
its own cancellation stays cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.contract import Customer, StockAlertCancelled, StockAlertRequested
from schemas.decode import as_model

from .context import Context
from .state import SkuState
from .stock import acceptable


def orderable(ctx: Context, sku: SkuState) -> bool:
    if sku.available > 0:
        return True
    if sku.discontinued or not sku.backorderable:
        return False
    return acceptable(ctx, sku, 1)[0] > 0


def stock_alert_requested(ctx: Context, env: StockAlertRequested) -> None:
    data = env.data
    state = ctx.state
    wh = data.warehouse_id
    if state.alerts_done.has(wh, data.alert_id):
        return
    waiting = state.alerts.setdefault((wh, data.sku), {})
    if data.alert_id in waiting:
        return
    sku = state.sku(wh, data.sku)
    customer = as_model(data.customer, Customer)  # the log's struct, kept as the model
    if orderable(ctx, sku):
        state.alerts_done.add(wh, data.alert_id)
        ctx.alerts_fired.append((data.alert_id, sku, customer))
    else:
        waiting[data.alert_id] = customer
    if not waiting:
        del state.alerts[(wh, data.sku)]


def stock_alert_cancelled(ctx: Context, env: StockAlertCancelled) -> None:
    data = env.data
    state = ctx.state
    wh = data.warehouse_id
    state.alerts_done.add(wh, data.alert_id)
    for key, waiting in list(state.alerts.items()):
        if key[0] == wh and waiting.pop(data.alert_id, None) is not None:
            if not waiting:
                del state.alerts[key]
            return


def tell_alerts(ctx: Context) -> None:
    """After a command: alerts of SKUs it touched that became orderable fire, oldest first."""
    alerts = ctx.state.alerts
    if not alerts:
        return
    for sku in {**ctx.touched, **ctx.alert_skus}:
        waiting = alerts.get(sku.key)
        if waiting is None or not orderable(ctx, sku):
            continue
        del alerts[sku.key]
        for alert_id, customer in waiting.items():
            ctx.state.alerts_done.add(sku.warehouse_id, alert_id)
            ctx.alerts_fired.append((alert_id, sku, customer))


HANDLERS: dict[str, Callable[[Context, Any], None]] = {
    "StockAlertRequested": stock_alert_requested,
    "StockAlertCancelled": stock_alert_cancelled,
}
