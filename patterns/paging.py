"""One page, one read: a page's `items` and its `total` always agree.

Protects against a list endpoint that counts with one query and fetches with another: a write
landing between the two makes the page contradict itself (`total` says 10 while 11 documents
came back, or the last page holds fewer items than `total` promises, so a client that trusts
`total` stops too early or asks for a page that turns out empty). Here both come from the same
stream of documents: one sorted `find`, read to the end, counting every document and keeping
those of the page. Whatever is written meanwhile, a page satisfies
`len(items) == min(limit, max(0, total - skip))`: the embedded server answers a `find` under
one lock; a real MongoDB may or may not include a document written during the read, and counts
it exactly when it does.

    page = read_page(orders, {"user_id": user_id}, sort=[("created_at", DESCENDING)],
                     skip=20, limit=10)
    page.items, page.total

Knobs: `sort` (ties are broken by `_id`, so consecutive pages neither repeat nor skip a
document), `skip`, `limit`, and `projection` (every matching document crosses the wire: bring
back only what the page shows).

The price: every page reads every matching document, which suits the lab's collections (a few
thousand documents at most). A real MongoDB alone would do it on the server and send only the
page: one aggregation, `$match`, `$sort`, then `$facet` with `items: [$skip, $limit]` and
`total: [$count]`. The embedded server of local mode gets that wrong: when more than 101
documents reach `$facet` from stages it runs in Python (an empty filter, `$in`, `$regex`), it
runs the sub-pipelines once per batch of 101, so `$count` answers several counts and
`$skip`/`$limit` apply per batch (docs/embedded-mongodb.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pymongo import ASCENDING
from pymongo.collection import Collection


class Page(NamedTuple):
    items: list[dict[str, Any]]
    total: int


def read_page(collection: Collection, criteria: Mapping[str, Any], *,
              sort: Sequence[tuple[str, int]], skip: int, limit: int,
              projection: Mapping[str, Any] | None = None) -> Page:
    """The `limit` documents after the first `skip` in `sort` order, and how many match."""
    order = list(sort)
    if all(field != "_id" for field, _ in order):
        order.append(("_id", ASCENDING))
    items: list[dict[str, Any]] = []
    total = 0
    for document in collection.find(dict(criteria), projection).sort(order):
        if skip <= total < skip + limit:
            items.append(document)
        total += 1
    return Page(items, total)
