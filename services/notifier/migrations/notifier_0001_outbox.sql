-- The notifier's outbox and its consumer offsets (see services/notifier/README.md).
-- Table names start with notifier_: the projector shares this database.

CREATE TABLE notifier_outbox (
    id               bigserial   PRIMARY KEY,
    -- event id (or deterministic reminder id): Message-ID / Idempotency-Key derive from it
    event_id         text        NOT NULL,
    channel          text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    kind             text        NOT NULL,
    event_type       text        NOT NULL,
    warehouse_id     text        NOT NULL,
    order_id         text        NOT NULL,
    message_id       text        NOT NULL,
    -- the rendered message, exactly as it is (re)sent; PII stays in the database
    recipient        text,
    subject          text,
    body_text        text,
    body_html        text,
    body_json        text,
    facts            jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed', 'superseded')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_error       text,
    superseded_by    text,
    note             text,
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    CONSTRAINT notifier_outbox_event_channel UNIQUE (event_id, channel)
);

-- The senders' work queue: due rows of one channel.
CREATE INDEX notifier_outbox_due ON notifier_outbox (channel, next_attempt_at)
    WHERE status = 'pending';
-- Anti-spam folding looks up an order's unsent ETA notices.
CREATE INDEX notifier_outbox_pending_eta ON notifier_outbox (warehouse_id, order_id)
    WHERE status = 'pending' AND kind = 'eta_changed';
CREATE INDEX notifier_outbox_status ON notifier_outbox (status, updated_at);

-- Consumer positions, written in the same transaction as the outbox rows.
CREATE TABLE notifier_offsets (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);
