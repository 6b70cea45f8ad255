-- Honest dates from the supply side (issue 15): the promise date per SKU, why an
-- open line has no ETA and why it waits, cancelled inbounds. Additive: every new
-- column is nullable or has a default, so a running projector of the previous
-- version keeps writing (it leaves them NULL/0) until `fulfil rebuild` fills them.
ALTER TABLE sku_backlog ADD COLUMN promise_eta date;
ALTER TABLE order_lines
    ADD COLUMN eta_reason text,
    ADD COLUMN backorder_reason text;
ALTER TABLE inbounds
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN cancel_reason text;
ALTER TABLE inbound_lines ADD COLUMN quantity_cancelled bigint NOT NULL DEFAULT 0;
