"""`patterns.paging.read_page` against the server under test: a page's items and total agree.

Runs, like the rest of the storage contract, on the embedded server or on the MongoDB named by
MONGO_URL. The race test pages while another thread inserts: with the old way (a count, then a
find) some pages contradict their own total; with one read none can.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from patterns.paging import Page, read_page

T0 = dt.datetime(2026, 3, 1, 9, 0, 0)
NEWEST_FIRST = [("created_at", DESCENDING)]
COLOURS = ("red", "green", "blue")


def document(n: int) -> dict[str, Any]:
    # Two documents per second: ties on created_at that only `_id` can order.
    return {"_id": f"doc-{n:04d}", "n": n, "colour": COLOURS[n % 3], "label": f"Item {n}",
            "created_at": T0 + dt.timedelta(seconds=n // 2)}


def ids(page: Page) -> list[str]:
    return [item["_id"] for item in page.items]


def newest_first(numbers: Iterable[int]) -> list[str]:
    """The ids in read_page's order: newest first, then `_id` ascending within a second."""
    return [f"doc-{n:04d}" for n in sorted(numbers, key=lambda n: (-(n // 2), n))]


@pytest.fixture
def things(db: Database) -> Collection:
    # More than one batch of a cursor (101 documents): nothing may stop at a batch's end.
    db.things.insert_many([document(n) for n in range(150)])
    return db.things


def test_pages_cover_every_match_once_in_order_and_agree_with_their_total(
        things: Collection) -> None:
    pages = [read_page(things, {}, sort=NEWEST_FIRST, skip=skip, limit=40)
             for skip in range(0, 160, 40)]

    assert [page.total for page in pages] == [150] * 4
    assert [len(page.items) for page in pages] == [40, 40, 40, 30]
    assert [item_id for page in pages for item_id in ids(page)] == newest_first(range(150))


def test_a_page_past_the_end_is_empty_and_still_counts_every_match(things: Collection) -> None:
    assert read_page(things, {}, sort=NEWEST_FIRST, skip=150, limit=10) == Page([], 150)
    assert read_page(things, {}, sort=NEWEST_FIRST, skip=500, limit=10) == Page([], 150)


def test_nothing_matching_is_an_empty_page_with_total_zero(things: Collection,
                                                           db: Database) -> None:
    assert read_page(things, {"colour": "purple"}, sort=NEWEST_FIRST, skip=0, limit=10) == \
        Page([], 0)
    assert read_page(db.never_written, {}, sort=NEWEST_FIRST, skip=0, limit=10) == Page([], 0)


@pytest.mark.parametrize(("criteria", "matches"), [
    ({"colour": {"$in": ["red", "blue"]}}, lambda n: COLOURS[n % 3] in ("red", "blue")),
    ({"label": {"$regex": "item 1", "$options": "i"}}, lambda n: str(n).startswith("1")),
    ({"$or": [{"colour": "red"}, {"n": {"$lt": 5}}]}, lambda n: n % 3 == 0 or n < 5),
], ids=["in", "regex", "or"])
def test_a_filter_pages_and_counts_only_its_matches(
        things: Collection, criteria: dict[str, Any], matches: Callable[[int], bool]) -> None:
    expected = newest_first(n for n in range(150) if matches(n))

    first = read_page(things, criteria, sort=NEWEST_FIRST, skip=0, limit=20)
    last = read_page(things, criteria, sort=NEWEST_FIRST, skip=len(expected) - 7, limit=20)

    assert (first.total, ids(first)) == (len(expected), expected[:20])
    assert (last.total, ids(last)) == (len(expected), expected[-7:])


def test_sort_orders_by_each_key_and_breaks_ties_by_id(db: Database) -> None:
    # Inserted in reverse: a server that keeps ties in insertion order gets them backwards.
    db.things.insert_many([document(n) for n in reversed(range(6))])

    by_colour = read_page(db.things, {}, sort=[("colour", ASCENDING)], skip=0, limit=10)
    explicit = read_page(db.things, {}, sort=[("colour", ASCENDING), ("_id", DESCENDING)],
                         skip=0, limit=10)

    assert ids(by_colour) == ["doc-0002", "doc-0005", "doc-0001", "doc-0004", "doc-0000",
                              "doc-0003"]
    assert ids(explicit) == ["doc-0005", "doc-0002", "doc-0004", "doc-0001", "doc-0003",
                             "doc-0000"]


def test_a_projection_limits_the_fields_of_the_items(things: Collection) -> None:
    page = read_page(things, {"n": 7}, sort=NEWEST_FIRST, skip=0, limit=5,
                     projection={"label": 1})

    assert page == Page([{"_id": "doc-0007", "label": "Item 7"}], 1)


def test_pages_read_while_documents_are_inserted_never_contradict_their_total(
        db: Database) -> None:
    things = db.things
    things.insert_many([document(n) for n in range(40)])
    inserting = threading.Thread(
        target=lambda: [things.insert_one(document(n)) for n in range(40, 340)])
    contradictions: list[tuple[int, int, int]] = []
    totals: set[int] = set()
    previous_total = 40

    inserting.start()
    while inserting.is_alive():
        # Ask for the last, partly filled page: a count taken apart from the find shows here.
        skip, limit = max(0, previous_total - 5), 10
        page = read_page(things, {}, sort=NEWEST_FIRST, skip=skip, limit=limit)
        if len(page.items) != min(limit, max(0, page.total - skip)):
            contradictions.append((skip, page.total, len(page.items)))
        totals.add(page.total)
        previous_total = page.total
    inserting.join()

    assert len(totals) > 5, "the inserts did not overlap the paging: the race was not run"
    assert contradictions == [], "(skip, total, items) of pages that contradict their total"


@pytest.mark.nx_gap("$facet after stages it runs in Python (an empty filter, $in, $regex) runs "
                    "its sub-pipelines once per batch of 101 documents: several counts, and "
                    "$skip/$limit per batch")
def test_facet_counts_and_pages_all_documents_in_one_aggregation(things: Collection) -> None:
    [result] = things.aggregate([
        {"$match": {"colour": {"$in": list(COLOURS)}}},
        {"$sort": {"created_at": DESCENDING, "_id": ASCENDING}},
        {"$facet": {"items": [{"$skip": 100}, {"$limit": 20}, {"$project": {"_id": 1}}],
                    "total": [{"$count": "n"}]}},
    ])

    assert result["total"] == [{"n": 150}]
    assert [item["_id"] for item in result["items"]] == newest_first(range(150))[100:120]
