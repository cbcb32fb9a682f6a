"""One competitor in the atomic stock reservation race of the storage contract.

Run as `python reserve_stock_worker.py MONGO_URL DATABASE SKU ATTEMPTS`. It connects, prints
`ready`, waits for a line on stdin (so that both competitors start together), then tries to
reserve one unit ATTEMPTS times with a conditional find_one_and_update, the way the inventory
service does. It prints a JSON list: the `available` count each successful reservation left.
"""

from __future__ import annotations

import json
import sys

from pymongo import MongoClient, ReturnDocument


def reserve_units(url: str, database: str, sku: str, attempts: int) -> list[int]:
    """Try `attempts` single-unit reservations; return the stock left after each one that won."""
    client: MongoClient = MongoClient(url)
    try:
        stock = client[database]["stock"]
        client.admin.command("ping")
        print("ready", flush=True)
        sys.stdin.readline()
        left_after: list[int] = []
        for _ in range(attempts):
            after = stock.find_one_and_update(
                {"_id": sku, "available": {"$gte": 1}},
                {"$inc": {"available": -1, "reserved": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if after is not None:
                left_after.append(after["available"])
        return left_after
    finally:
        client.close()


if __name__ == "__main__":
    mongo_url, database_name, sku_id, attempt_count = sys.argv[1:5]
    print(json.dumps(reserve_units(mongo_url, database_name, sku_id, int(attempt_count))))
