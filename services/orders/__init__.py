"""The orders service: orders and the order saga."""
