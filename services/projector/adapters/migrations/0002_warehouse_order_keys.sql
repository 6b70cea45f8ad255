-- Orders are keyed by (warehouse_id, order_id), like the allocator keys them: a
-- split order (the same order_id placed in two warehouses) is two orders, each
-- with its own lines and status. Rows written under the old key cannot be split
-- again (they were merged): `fulfil rebuild` recomputes them from the log.
ALTER TABLE order_lines DROP CONSTRAINT order_lines_order_id_fkey;
ALTER TABLE order_lines DROP CONSTRAINT order_lines_pkey;
ALTER TABLE orders DROP CONSTRAINT orders_pkey;
ALTER TABLE orders ADD PRIMARY KEY (warehouse_id, order_id);
-- A merged order's lines carried its last warehouse; give any line whose
-- (warehouse, order) has no head one, so the foreign key holds.
INSERT INTO orders (warehouse_id, order_id, updated_at)
SELECT l.warehouse_id, l.order_id, max(l.updated_at)
FROM order_lines l
WHERE NOT EXISTS (
    SELECT 1 FROM orders o WHERE o.warehouse_id = l.warehouse_id AND o.order_id = l.order_id)
GROUP BY l.warehouse_id, l.order_id;
ALTER TABLE order_lines ADD PRIMARY KEY (warehouse_id, order_id, line_no);
ALTER TABLE order_lines ADD CONSTRAINT order_lines_order_fkey FOREIGN KEY (warehouse_id, order_id)
    REFERENCES orders (warehouse_id, order_id) DEFERRABLE INITIALLY DEFERRED;

-- Sums over many orders and stock positions outgrow 32 bits long before any
-- single line does.
ALTER TABLE sku_backlog
    ALTER COLUMN backordered_units TYPE bigint,
    ALTER COLUMN open_orders TYPE bigint,
    ALTER COLUMN available TYPE bigint,
    ALTER COLUMN reserved TYPE bigint,
    ALTER COLUMN incoming TYPE bigint,
    ALTER COLUMN shortfall TYPE bigint;
ALTER TABLE inbound_lines
    ALTER COLUMN quantity_expected TYPE bigint,
    ALTER COLUMN quantity_received TYPE bigint;

-- The last allocation output applied per allocations partition, as the
-- allocator positions it (command offset, output index): a resent batch
-- (same outputs at new offsets) is recognised and skipped. NULL on input topics.
ALTER TABLE projector_offsets
    ADD COLUMN applied_command_offset bigint,
    ADD COLUMN applied_output_index integer;
