-- +goose Up
-- The orders table, close to the seed's seckill_order, extended for several
-- sales and perUserLimit > 1. Status keeps the seed's values:
-- 0 created (the seed's "processing"), 1 paid, 2 cancelled.
CREATE TABLE seckill_order (
  id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  order_no       VARCHAR(96)  NOT NULL,
  sale           VARCHAR(253) NOT NULL COMMENT 'namespace/name of the FlashSale',
  sku_id         VARCHAR(64)  NOT NULL,
  user_id        VARCHAR(64)  NOT NULL,
  seq            INT UNSIGNED NOT NULL COMMENT 'the user''s n-th purchase of this SKU',
  amount         DECIMAL(14,2) NOT NULL,
  status         TINYINT      NOT NULL DEFAULT 0 COMMENT '0 created, 1 paid, 2 cancelled',
  pay_deadline   DATETIME(3)  NOT NULL,
  admitted_at    DATETIME(3)  NOT NULL COMMENT 'when the purchase script admitted it',
  created_at     TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at     TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  paid_at        DATETIME(3)  NULL,
  cancelled_at   DATETIME(3)  NULL,
  stock_returned TINYINT      NOT NULL DEFAULT 0 COMMENT '1 once a cancelled order''s unit is back in Redis',
  UNIQUE KEY ux_order_no (order_no),
  UNIQUE KEY ux_purchase (sale, sku_id, user_id, seq),
  KEY ix_rollback (sale, status, pay_deadline),
  KEY ix_unreturned (sale, status, stock_returned)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- +goose Down
DROP TABLE seckill_order;
