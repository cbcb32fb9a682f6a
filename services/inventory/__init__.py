"""The inventory service: stock levels, reservations with idempotency keys."""
