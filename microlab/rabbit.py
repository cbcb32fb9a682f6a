"""Housekeeping on the shared RabbitMQ: remove what one sandbox's namespace left behind.

Queues and exchanges are durable on purpose (events survive a broker restart), so a test run or
a throw-away sandbox leaves them behind when it stops. `delete_namespace` removes every queue and
exchange whose name starts with `<namespace>.`. Listing needs `rabbitmqctl` (the management
plugin may be off); without it nothing is removed and the call says so.
"""

from __future__ import annotations

import shutil
import subprocess

import pika
from pika.exceptions import AMQPError


def _names(kind: str) -> list[str]:
    result = subprocess.run(["rabbitmqctl", f"list_{kind}", "--quiet", "--no-table-headers",
                             "name"], capture_output=True, text=True, timeout=60)
    return result.stdout.split() if result.returncode == 0 else []


def delete_namespace(amqp_url: str, namespace: str) -> int:
    """Delete the namespace's queues and exchanges; returns how many were deleted (-1: could
    not list them)."""
    if not namespace or not shutil.which("rabbitmqctl"):
        return -1
    prefix = f"{namespace}."
    queues = [name for name in _names("queues") if name.startswith(prefix)]
    exchanges = [name for name in _names("exchanges") if name.startswith(prefix)]
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    except AMQPError:
        return -1
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()
    return len(queues) + len(exchanges)
