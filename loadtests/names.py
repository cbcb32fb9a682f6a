"""Request names shared by the Locust files and the scenarios reading their CSVs.

(The Locust files cannot be imported outside Locust: importing locust patches the process.)
"""

ORDERS = "POST /api/orders"  # one order placed through the gateway (locust_shop.py)
NAIVE = "naive retries"  # one call through the naive retry policy (locust_retries.py)
BUDGETED = "backoff + jitter + budget"  # ... through the budgeted one
