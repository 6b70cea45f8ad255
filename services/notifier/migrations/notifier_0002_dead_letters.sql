-- Records the notifier quarantined (contract broken, no template renders them, or
-- PostgreSQL cannot hold them), written in the same transaction as the consumer
-- offsets and published to `<group>.dlq` after the commit. The key is the source
-- position: a batch read again records nothing new, so it publishes nothing again.
-- depends: notifier_0001_outbox

CREATE TABLE notifier_dead_letters (
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    record_key       bytea,
    record_value     bytea       NOT NULL,
    header_names     text[]      NOT NULL,
    header_values    bytea[]     NOT NULL,
    kind             text        NOT NULL,
    reason           text        NOT NULL,
    recorded_at      timestamptz NOT NULL,
    published_at     timestamptz,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- The publisher's queue: what is recorded but not on the dead-letter topic yet.
CREATE INDEX notifier_dead_letters_unpublished ON notifier_dead_letters (recorded_at)
    WHERE published_at IS NULL;
