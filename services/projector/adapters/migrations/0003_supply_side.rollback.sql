ALTER TABLE inbound_lines DROP COLUMN quantity_cancelled;
ALTER TABLE inbounds DROP COLUMN cancel_reason, DROP COLUMN cancelled_at;
ALTER TABLE order_lines DROP COLUMN backorder_reason, DROP COLUMN eta_reason;
ALTER TABLE sku_backlog DROP COLUMN promise_eta;
