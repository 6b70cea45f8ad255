-- A back-in-stock message (StockAlertTriggered) is about a stock alert, not an order:
-- its row names the alert and no order. Every other row names an order, as before
-- (the anti-spam folding and `fulfil trace` look rows up by (warehouse_id, order_id)).
-- The unique key stays (event_id, channel): one message per event and channel.
-- depends: notifier_0002_dead_letters

ALTER TABLE notifier_outbox ALTER COLUMN order_id DROP NOT NULL;
ALTER TABLE notifier_outbox ADD COLUMN alert_id text;
ALTER TABLE notifier_outbox ADD CONSTRAINT notifier_outbox_order_or_alert
    CHECK ((order_id IS NULL) <> (alert_id IS NULL));
