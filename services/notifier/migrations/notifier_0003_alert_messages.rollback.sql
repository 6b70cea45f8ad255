DELETE FROM notifier_outbox WHERE order_id IS NULL;
ALTER TABLE notifier_outbox DROP CONSTRAINT notifier_outbox_order_or_alert;
ALTER TABLE notifier_outbox DROP COLUMN alert_id;
ALTER TABLE notifier_outbox ALTER COLUMN order_id SET NOT NULL;
