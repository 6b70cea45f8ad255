DROP TABLE notifier_offsets;
DROP TABLE notifier_outbox;
