-- The projector's read models. Every column is derived from events (no now()),
-- so a rebuild from offset 0 reproduces the live tables exactly.

-- Next offset to apply per input partition, written in the same transaction
-- as the rows: the projector's exactly-once guarantee.
CREATE TABLE projector_offsets (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- One row per order. Allocation events own status/updated_at/backordered_*;
-- OrderPlaced (orders.v1) owns placed_at. Customer columns are PII: they are
-- stored for the notifier and never logged or printed by the projector.
CREATE TABLE orders (
    order_id          text PRIMARY KEY,
    warehouse_id      text NOT NULL,
    customer_id       text,
    customer_email    text,
    customer_name     text,
    customer_locale   text,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'allocated', 'partially_shipped', 'backordered',
        'rejected', 'cancelled', 'shipped')),
    placed_at         timestamptz,
    updated_at        timestamptz NOT NULL,
    backordered_since timestamptz,
    backordered_ever  boolean NOT NULL DEFAULT false,
    last_event_type   text,
    last_event_id     text
);
CREATE INDEX orders_open_by_since ON orders (backordered_since)
    WHERE status IN ('backordered', 'partially_shipped');

-- Quantities are the line's totals after the latest allocation event that
-- reported it (allocated + backordered + rejected + cancelled = quantity;
-- reserved is the part of backordered held on the shelf).
CREATE TABLE order_lines (
    order_id          text    NOT NULL REFERENCES orders (order_id) DEFERRABLE INITIALLY DEFERRED,
    line_no           integer NOT NULL,
    warehouse_id      text    NOT NULL,
    sku               text    NOT NULL,
    quantity          integer NOT NULL CHECK (quantity > 0),
    allocated         integer NOT NULL DEFAULT 0 CHECK (allocated >= 0),
    backordered       integer NOT NULL DEFAULT 0 CHECK (backordered >= 0),
    reserved          integer NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= backordered),
    rejected          integer NOT NULL DEFAULT 0 CHECK (rejected >= 0),
    cancelled         integer NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    eta               date,
    unit_price        numeric(19, 4),
    currency          text,
    reason            text,
    backordered_since timestamptz,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (order_id, line_no),
    CHECK (allocated + backordered + rejected + cancelled = quantity)
);
-- Backlog, aging and deposits only ever read open lines: a small partial index.
CREATE INDEX order_lines_open ON order_lines (warehouse_id, sku) WHERE backordered > 0;

-- Per (warehouse, SKU): backlog columns are recomputed from order_lines for the
-- SKUs a batch touches; position columns are the last StockPositionChanged.
CREATE TABLE sku_backlog (
    warehouse_id        text NOT NULL,
    sku                 text NOT NULL,
    backordered_units   integer NOT NULL DEFAULT 0,
    open_orders         integer NOT NULL DEFAULT 0,
    oldest_backorder_at timestamptz,
    available           integer NOT NULL DEFAULT 0,
    reserved            integer NOT NULL DEFAULT 0,
    incoming            integer NOT NULL DEFAULT 0,
    next_eta            date,
    shortfall           integer NOT NULL DEFAULT 0,
    position_at         timestamptz,
    PRIMARY KEY (warehouse_id, sku)
);

-- Inbound supplier shipments (InboundScheduled / ShipmentDelayed / StockReceived).
CREATE TABLE inbounds (
    warehouse_id text NOT NULL,
    inbound_id   text NOT NULL,
    supplier     text,
    original_eta date,
    current_eta  date,
    delay_days   integer GENERATED ALWAYS AS (current_eta - original_eta) STORED,
    scheduled_at timestamptz,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (warehouse_id, inbound_id)
);

CREATE TABLE inbound_lines (
    warehouse_id      text    NOT NULL,
    inbound_id        text    NOT NULL,
    sku               text    NOT NULL,
    quantity_expected integer NOT NULL DEFAULT 0,
    quantity_received integer NOT NULL DEFAULT 0,
    first_received_at timestamptz,
    PRIMARY KEY (warehouse_id, inbound_id, sku)
);

-- Receipts already counted: a re-delivered receipt (same receipt_id) counts once.
CREATE TABLE inbound_receipts (
    warehouse_id text NOT NULL,
    receipt_id   text NOT NULL,
    inbound_id   text NOT NULL,
    sku          text NOT NULL,
    quantity     integer NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (warehouse_id, receipt_id)
);

-- Schedules and delays already applied, by envelope id: a re-delivered old
-- InboundScheduled must not move an ETA back.
CREATE TABLE inbound_events (
    event_id text PRIMARY KEY
);

-- Demand history: orders already counted, and units ordered per UTC day.
CREATE TABLE demand_orders (
    warehouse_id text NOT NULL,
    order_id     text NOT NULL,
    placed_at    timestamptz NOT NULL,
    PRIMARY KEY (warehouse_id, order_id)
);

CREATE TABLE daily_demand (
    warehouse_id text   NOT NULL,
    sku          text   NOT NULL,
    day          date   NOT NULL,
    units        bigint NOT NULL,
    PRIMARY KEY (warehouse_id, sku, day)
);
