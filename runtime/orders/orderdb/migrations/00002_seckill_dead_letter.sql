-- +goose Up
-- Messages a sale's pipeline could not store as orders, kept past the sale:
-- teardown deletes the dead-letter stream and topic, never this table.
-- A row is either a poison message (not a valid order: garbage bytes, an
-- order of another sale) or, with valid = 1, a valid order abandoned on
-- purpose (spec.teardown.strandedOrders: Abandon) or left undrained when a
-- sale was deleted. The unique key makes archiving idempotent: the same
-- message archived twice (a retried teardown) is one row. The payload's
-- digest is part of it because a sale re-created under the same name starts
-- its dead-letter topic at offset 0 again: a different message at the same
-- partition@offset is a different row, never silently dropped.
CREATE TABLE seckill_dead_letter (
  id             BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  sale           VARCHAR(253)  NOT NULL COMMENT 'namespace/name of the FlashSale',
  sku_id         VARCHAR(64)   NOT NULL DEFAULT '' COMMENT 'empty when the message names none',
  source         VARCHAR(16)   NOT NULL COMMENT 'kafka-dlq, dlq-stream, stream or kafka',
  source_id      VARCHAR(128)  NOT NULL COMMENT 'stream entry id, or partition@offset',
  payload_sha256 BINARY(32)    NOT NULL,
  order_no       VARCHAR(96)   NULL COMMENT 'set when the payload is (or names) an order',
  valid          TINYINT       NOT NULL DEFAULT 0 COMMENT '1: a valid order of the sale, 0: poison',
  payload        MEDIUMBLOB    NOT NULL COMMENT 'Kafka: the message value as it was; stream: its fields as a JSON object (base64 pairs when not UTF-8)',
  reason         TEXT          NOT NULL COMMENT 'why it was dead-lettered or archived',
  archived_at    DATETIME(3)   NOT NULL,
  UNIQUE KEY ux_source (sale, source, source_id, payload_sha256),
  KEY ix_order_no (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE seckill_dead_letter;
