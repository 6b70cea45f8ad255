ALTER TABLE projector_offsets DROP COLUMN applied_command_offset, DROP COLUMN applied_output_index;
ALTER TABLE inbound_lines
    ALTER COLUMN quantity_expected TYPE integer,
    ALTER COLUMN quantity_received TYPE integer;
ALTER TABLE sku_backlog
    ALTER COLUMN backordered_units TYPE integer,
    ALTER COLUMN open_orders TYPE integer,
    ALTER COLUMN available TYPE integer,
    ALTER COLUMN reserved TYPE integer,
    ALTER COLUMN incoming TYPE integer,
    ALTER COLUMN shortfall TYPE integer;
ALTER TABLE order_lines DROP CONSTRAINT order_lines_order_fkey;
ALTER TABLE order_lines DROP CONSTRAINT order_lines_pkey;
ALTER TABLE orders DROP CONSTRAINT orders_pkey;
ALTER TABLE orders ADD PRIMARY KEY (order_id);
ALTER TABLE order_lines ADD PRIMARY KEY (order_id, line_no);
ALTER TABLE order_lines ADD CONSTRAINT order_lines_order_id_fkey FOREIGN KEY (order_id)
    REFERENCES orders (order_id) DEFERRABLE INITIALLY DEFERRED;
