"""The payments service: charges and refunds over simulated providers."""
