"""The storage contract: what the services' data needs from MongoDB, checked over plain pymongo.

The same tests run against the embedded server of local mode (default) and against any real
MongoDB named by MONGO_URL (compose mode's `mongo:7`), so code that passes locally behaves the
same in a container. Each test works in a database of its own (`db` fixture).

Where the data needs come from: users (unique e-mail, roles), products (filters, case-insensitive
search, pagination, categories), inventory (atomic conditional reservation), payments and
idempotency keys (unique keys, upserts), orders (status transitions, line items, saga log,
totals), notifications and the outbox (newest/oldest first, mark as read, claim one), and the
invariant checker (sums across collections).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, DeleteOne, MongoClient, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import UpdateResult

from microlab.embedded_mongo import mongo_command, running_mongo, wait_for_mongo
from microlab.topology import LOOPBACK, free_ports

RESERVE_WORKER = Path(__file__).with_name("reserve_stock_worker.py")
T0 = dt.datetime(2026, 3, 1, 9, 0, 0)  # MongoDB keeps milliseconds, naive UTC on the way back

CATALOGUE: list[dict[str, Any]] = [
    {"sku": "W-1", "name": "Blue Widget", "category": "widgets", "price": 1250, "stock": 4,
     "tags": ["blue", "sale"], "dimensions": {"weight_g": 120}, "added": T0},
    {"sku": "W-2", "name": "widget stand", "category": "widgets", "price": 990, "stock": 0,
     "tags": ["stand"], "dimensions": {"weight_g": 800}, "added": T0 + dt.timedelta(days=1)},
    {"sku": "W-3", "name": "MEGA WIDGETS pack", "category": "widgets", "price": 4999, "stock": 12,
     "tags": ["sale"], "dimensions": {"weight_g": 2400}, "added": T0 + dt.timedelta(days=2)},
    {"sku": "G-1", "name": "Red Gadget", "category": "gadgets", "price": 1250, "stock": 7,
     "tags": ["red"], "dimensions": {"weight_g": 300}, "added": T0 + dt.timedelta(days=3)},
    {"sku": "G-2", "name": "Gadget v2.0", "category": "gadgets", "price": 15000, "stock": 1,
     "tags": [], "dimensions": {"weight_g": 950}, "added": T0 + dt.timedelta(days=4)},
    {"sku": "G-3", "name": "Gadget v200", "category": "gadgets", "price": 150, "stock": 30,
     "tags": ["sale"], "dimensions": {"weight_g": 40}, "added": T0 + dt.timedelta(days=5)},
    {"sku": "B-1", "name": "Book of widgets", "category": "books", "price": 2500, "stock": 3,
     "tags": ["paper"], "dimensions": {"weight_g": 600}, "added": T0 + dt.timedelta(days=6)},
    {"sku": "B-2", "name": "Another book", "category": "books", "price": 1800, "stock": 9,
     "tags": ["paper", "sale"], "dimensions": {"weight_g": 450}, "added": T0 + dt.timedelta(days=7),
     "discontinued": True},
]


def skus(documents: Iterable[Mapping[str, Any]]) -> list[str]:
    return [document["sku"] for document in documents]


@pytest.fixture
def products(db: Database) -> Collection:
    db.products.insert_many([dict(product) for product in CATALOGUE])
    return db.products


def order(order_id: str, status: str, total: int, items: list[tuple[str, int]]) -> dict[str, Any]:
    return {"_id": order_id, "status": status, "total": total,
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items]}


# --- create, read, update, delete -----------------------------------------------------------


def test_inserted_document_reads_back_with_the_same_values_and_types(db: Database) -> None:
    user = {"email": "ada@example.org", "age": 36, "active": True, "nickname": None,
            "roles": ["user", "admin"], "address": {"city": "London", "zip": "N1"},
            "joined": dt.datetime(2026, 1, 2, 3, 4, 5, 678000), "balance_cents": 2**40}
    inserted_id = db.users.insert_one(dict(user)).inserted_id

    stored = db.users.find_one({"_id": inserted_id})

    assert isinstance(inserted_id, ObjectId)
    assert stored == {**user, "_id": inserted_id}
    assert stored["active"] is True and stored["nickname"] is None
    assert isinstance(stored["joined"], dt.datetime) and isinstance(stored["balance_cents"], int)
    assert db.users.find_one({"email": "nobody@example.org"}) is None


def test_documents_can_carry_their_own_string_ids(db: Database) -> None:
    db.orders.insert_one(order("order-1", "pending", 500, [("W-1", 1)]))

    assert db.orders.find_one({"_id": "order-1"})["total"] == 500
    with pytest.raises(DuplicateKeyError):
        db.orders.insert_one(order("order-1", "pending", 999, []))
    assert db.orders.find_one({"_id": "order-1"})["total"] == 500


def test_replace_one_keeps_the_id_and_delete_one_removes_a_single_document(db: Database) -> None:
    first, second = db.emails.insert_many(
        [{"to": "a@example.org", "subject": "hi"}, {"to": "a@example.org", "subject": "again"}]
    ).inserted_ids

    replaced = db.emails.replace_one({"_id": first}, {"to": "b@example.org", "subject": "new"})
    deleted = db.emails.delete_one({"to": "a@example.org"})

    assert (replaced.matched_count, replaced.modified_count) == (1, 1)
    assert db.emails.find_one({"_id": first}, {"_id": 0}) == {"to": "b@example.org",
                                                               "subject": "new"}
    assert deleted.deleted_count == 1
    assert db.emails.find_one({"_id": second}) is None
    assert db.emails.count_documents({}) == 1


@pytest.mark.parametrize(("query", "expected"), [
    pytest.param({"category": "widgets"}, ["W-1", "W-2", "W-3"], id="equality"),
    pytest.param({"price": {"$gte": 990, "$lte": 1800}}, ["W-1", "W-2", "G-1", "B-2"],
                 id="price-range"),
    pytest.param({"category": {"$in": ["books", "gadgets"]}, "stock": {"$gt": 5}},
                 ["G-1", "G-3", "B-2"], id="in-and-gt"),
    pytest.param({"category": {"$ne": "gadgets"}, "stock": {"$lt": 4}}, ["W-2", "B-1"],
                 id="ne-and-lt"),
    pytest.param({"discontinued": {"$exists": True}}, ["B-2"], id="exists"),
    pytest.param({"discontinued": {"$exists": False}, "category": "books"}, ["B-1"],
                 id="not-exists"),
    pytest.param({"tags": "sale"}, ["W-1", "W-3", "G-3", "B-2"], id="array-contains"),
    pytest.param({"tags": {"$all": ["paper", "sale"]}}, ["B-2"], id="array-all"),
    pytest.param({"dimensions.weight_g": {"$gt": 900}}, ["W-3", "G-2"], id="nested-field"),
    pytest.param({"$or": [{"price": {"$lt": 200}}, {"stock": 0}]}, ["W-2", "G-3"], id="or"),
    pytest.param({"added": {"$gte": T0 + dt.timedelta(days=2), "$lt": T0 + dt.timedelta(days=4)}},
                 ["W-3", "G-1"], id="date-range"),
])
def test_filters_select_exactly_the_matching_documents(
        products: Collection, query: dict[str, Any], expected: list[str]) -> None:
    assert sorted(skus(products.find(query))) == sorted(expected)


def test_array_of_subdocuments_matches_by_field_and_by_elem_match(db: Database) -> None:
    db.orders.insert_many([
        order("o1", "confirmed", 2500, [("W-1", 1), ("G-1", 1)]),
        order("o2", "pending", 4990, [("W-1", 3)]),
        order("o3", "pending", 150, [("G-3", 1), ("W-1", 1)]),
    ])

    containing_w1 = db.orders.find({"items.sku": "W-1"}).sort("_id", ASCENDING)
    w1_in_bulk = db.orders.find({"items": {"$elemMatch": {"sku": "W-1", "quantity": {"$gte": 2}}}})

    assert [o["_id"] for o in containing_w1] == ["o1", "o2", "o3"]
    assert [o["_id"] for o in w1_in_bulk] == ["o2"]


def test_distinct_lists_each_category_once(products: Collection) -> None:
    assert sorted(products.distinct("category")) == ["books", "gadgets", "widgets"]


# --- sort, skip, limit, count ---------------------------------------------------------------


def test_sort_skip_limit_pages_through_the_catalogue_in_order(products: Collection) -> None:
    expected = [p["sku"] for p in sorted(CATALOGUE, key=lambda p: (-p["price"], p["sku"]))]
    page_size = 3

    pages = [
        skus(products.find({}, {"sku": 1}).sort([("price", DESCENDING), ("sku", ASCENDING)])
             .skip(page * page_size).limit(page_size))
        for page in range(3)
    ]

    assert pages == [expected[0:3], expected[3:6], expected[6:8]]
    assert skus(products.find().sort("sku", ASCENDING).skip(100).limit(3)) == []


def test_sort_by_date_returns_newest_first(products: Collection) -> None:
    newest = products.find({}, {"sku": 1, "added": 1}).sort("added", DESCENDING).limit(3)

    assert skus(newest) == ["B-2", "B-1", "G-3"]


def test_count_documents_counts_matches_and_honours_skip_and_limit(products: Collection) -> None:
    assert products.count_documents({}) == len(CATALOGUE)
    assert products.count_documents({"category": "gadgets"}) == 3
    assert products.count_documents({"category": "toys"}) == 0
    assert products.count_documents({}, skip=6) == 2
    assert products.count_documents({"tags": "sale"}, limit=2) == 2


# --- update operators -----------------------------------------------------------------------


def test_set_inc_push_and_unset_apply_together_in_one_update(db: Database) -> None:
    order_id = db.orders.insert_one(
        {"status": "pending", "attempts": 1, "address": {"city": "Oslo"}, "note": "ring twice"}
    ).inserted_id

    result = db.orders.update_one({"_id": order_id}, {
        "$set": {"status": "paid", "address.zip": "0150"},
        "$inc": {"attempts": 2, "refunds": 1},
        "$push": {"history": "charged"},
        "$unset": {"note": ""},
    })

    assert (result.matched_count, result.modified_count) == (1, 1)
    assert db.orders.find_one({"_id": order_id}, {"_id": 0}) == {
        "status": "paid", "attempts": 3, "refunds": 1, "address": {"city": "Oslo", "zip": "0150"},
        "history": ["charged"],
    }


def test_push_appends_in_order_to_an_existing_list(db: Database) -> None:
    saga_id = db.sagas.insert_one({"log": []}).inserted_id
    for step in ("reserve", "charge", "confirm"):
        db.sagas.update_one({"_id": saga_id}, {"$push": {"log": step}})

    assert db.sagas.find_one({"_id": saga_id})["log"] == ["reserve", "charge", "confirm"]


@pytest.mark.nx_gap("$push of a subdocument stores it as a JSON string, and turns the "
                    "subdocuments already in the list into strings too (queries on them stop "
                    "matching); $addToSet of a subdocument works")
def test_push_appends_a_subdocument_that_stays_queryable(db: Database) -> None:
    saga_id = db.sagas.insert_one({"steps": [{"name": "reserve", "ok": True}]}).inserted_id

    db.sagas.update_one({"_id": saga_id}, {"$push": {"steps": {"name": "charge", "ok": False}}})

    assert db.sagas.find_one({"_id": saga_id})["steps"] == [{"name": "reserve", "ok": True},
                                                             {"name": "charge", "ok": False}]
    assert db.sagas.count_documents({"steps.name": "reserve"}) == 1


@pytest.mark.nx_gap("$set (and update_many, find_one_and_update) stores a top-level True/False "
                    "as 1/0, so it reads back as an int; inserts and replaces keep booleans")
def test_set_keeps_a_boolean_a_boolean(db: Database) -> None:
    db.notifications.insert_one({"_id": "n1", "read": False})

    db.notifications.update_one({"_id": "n1"}, {"$set": {"read": True}})

    assert db.notifications.find_one({"_id": "n1"})["read"] is True


@pytest.mark.nx_gap("$set (and update_many, find_one_and_update) stores a top-level datetime "
                    "as its text, so it reads back as a str; inserted datetimes stay datetimes")
def test_set_keeps_a_datetime_a_datetime(db: Database) -> None:
    created = dt.datetime(2026, 11, 25, 12, 0, 0)
    db.orders.insert_one({"_id": "o1", "created_at": created, "updated_at": created})

    db.orders.update_one({"_id": "o1"}, {"$set": {"updated_at": created + dt.timedelta(minutes=5)}})

    order = db.orders.find_one({"_id": "o1"})
    assert order["created_at"] == created
    assert order["updated_at"] == created + dt.timedelta(minutes=5)


def test_pull_removes_every_matching_value_and_only_those(db: Database) -> None:
    user_id = db.users.insert_one({
        "roles": ["user", "admin", "auditor", "admin"],
        "devices": [{"id": "a", "active": False}, {"id": "b", "active": True}],
        "scores": [1, 5, 9, 2],
    }).inserted_id

    db.users.update_one({"_id": user_id}, {"$pull": {"roles": "admin",
                                                     "devices": {"active": False},
                                                     "scores": {"$lt": 3}}})
    missing = db.users.update_one({"_id": user_id}, {"$pull": {"roles": "owner"}})

    assert db.users.find_one({"_id": user_id}, {"_id": 0}) == {
        "roles": ["user", "auditor"], "devices": [{"id": "b", "active": True}], "scores": [5, 9]}
    assert missing.modified_count == 0


def test_add_to_set_adds_only_values_not_already_present(db: Database) -> None:
    user_id = db.users.insert_one({"roles": ["user"]}).inserted_id

    already = db.users.update_one({"_id": user_id}, {"$addToSet": {"roles": "user"}})
    added = db.users.update_one({"_id": user_id}, {"$addToSet": {"roles": "admin"}})
    several = db.users.update_one({"_id": user_id},
                                  {"$addToSet": {"roles": {"$each": ["admin", "auditor"]}}})

    assert (already.modified_count, added.modified_count, several.modified_count) == (0, 1, 1)
    assert db.users.find_one({"_id": user_id})["roles"] == ["user", "admin", "auditor"]


def test_update_many_changes_every_match_and_nothing_else(db: Database) -> None:
    db.notifications.insert_many([
        {"user": "ada", "read": False, "text": "one"},
        {"user": "ada", "read": False, "text": "two"},
        {"user": "ada", "read": True, "text": "old"},
        {"user": "bob", "read": False, "text": "bob's"},
    ])

    result = db.notifications.update_many({"user": "ada", "read": False}, {"$set": {"read": True}})

    assert (result.matched_count, result.modified_count) == (2, 2)
    assert db.notifications.count_documents({"read": False}) == 1
    assert db.notifications.find_one({"read": False})["user"] == "bob"


def test_conditional_update_lets_each_status_transition_happen_once(db: Database) -> None:
    db.orders.insert_one(order("o1", "pending", 1000, [("W-1", 1)]))
    confirm = {"$set": {"status": "confirmed"}, "$push": {"events": "order.confirmed"}}

    first = db.orders.update_one({"_id": "o1", "status": "pending"}, confirm)
    second = db.orders.update_one({"_id": "o1", "status": "pending"}, confirm)

    assert (first.matched_count, second.matched_count) == (1, 0)
    assert db.orders.find_one({"_id": "o1"})["events"] == ["order.confirmed"]


# --- find_one_and_update: reservations and claims -------------------------------------------


def test_reservation_is_refused_when_stock_is_short_and_leaves_stock_untouched(
        db: Database) -> None:
    db.stock.insert_one({"_id": "W-1", "available": 3, "reserved": 0})

    def reserve(quantity: int) -> dict[str, Any] | None:
        return db.stock.find_one_and_update(
            {"_id": "W-1", "available": {"$gte": quantity}},
            {"$inc": {"available": -quantity, "reserved": quantity}},
            return_document=ReturnDocument.AFTER,
        )

    refused = reserve(5)
    granted = reserve(2)

    assert refused is None
    assert granted == {"_id": "W-1", "available": 1, "reserved": 2}
    assert db.stock.find_one({"_id": "W-1"}) == granted


def test_find_one_and_update_returns_the_document_before_the_update_by_default(
        db: Database) -> None:
    db.counters.insert_one({"_id": "order-number", "value": 41})

    before = db.counters.find_one_and_update({"_id": "order-number"}, {"$inc": {"value": 1}})

    assert before == {"_id": "order-number", "value": 41}
    assert db.counters.find_one({"_id": "order-number"})["value"] == 42


def test_find_one_and_update_with_sort_claims_the_oldest_pending_message_first(
        db: Database) -> None:
    db.outbox.insert_many([
        {"event": f"e{minute}", "status": "sent" if minute == 0 else "pending",
         "created": T0 + dt.timedelta(minutes=minute)}
        for minute in (3, 0, 1, 2)
    ])

    def claim() -> dict[str, Any] | None:
        return db.outbox.find_one_and_update(
            {"status": "pending"}, {"$set": {"status": "publishing"}},
            sort=[("created", ASCENDING)], return_document=ReturnDocument.AFTER,
        )

    claimed = [claim() for _ in range(4)]

    assert [c["event"] if c else None for c in claimed] == ["e1", "e2", "e3", None]
    assert all(c["status"] == "publishing" for c in claimed[:3])


def test_concurrent_reservations_from_two_processes_never_oversell(db: Database,
                                                                   mongo_url: str) -> None:
    units, attempts_per_process = 300, 200
    db.stock.insert_one({"_id": "W-1", "available": units, "reserved": 0})
    workers = [
        subprocess.Popen([sys.executable, str(RESERVE_WORKER), mongo_url, db.name, "W-1",
                          str(attempts_per_process)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # both are connected: start the race
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    left_after = [json.loads(output) for output in outputs]
    every_left_after = sorted(value for worker_values in left_after for value in worker_values)

    assert [worker.returncode for worker in workers] == [0, 0]
    assert len(every_left_after) == units
    # Each success saw a different stock level: no two reservations took the same unit.
    assert every_left_after == list(range(units))
    assert db.stock.find_one({"_id": "W-1"}) == {"_id": "W-1", "available": 0, "reserved": units}


# --- unique and compound indexes ------------------------------------------------------------


def test_unique_index_rejects_duplicates_on_insert_update_and_upsert(db: Database) -> None:
    assert db.users.create_index("email", unique=True) == "email_1"
    db.users.insert_many([{"email": "ada@example.org", "name": "Ada"},
                          {"email": "bob@example.org", "name": "Bob"}])

    with pytest.raises(DuplicateKeyError) as on_insert:
        db.users.insert_one({"email": "ada@example.org", "name": "Impostor"})
    with pytest.raises(DuplicateKeyError):
        db.users.update_one({"email": "bob@example.org"}, {"$set": {"email": "ada@example.org"}})
    with pytest.raises(DuplicateKeyError):
        db.users.update_one({"name": "Eve"}, {"$set": {"email": "ada@example.org"}}, upsert=True)

    assert on_insert.value.code == 11000
    assert sorted((u["email"], u["name"]) for u in db.users.find()) == [
        ("ada@example.org", "Ada"), ("bob@example.org", "Bob")]


def test_ordered_insert_many_stops_at_the_first_duplicate(db: Database) -> None:
    db.payments.create_index("idempotency_key", unique=True)
    db.payments.insert_one({"idempotency_key": "k2", "amount": 100})

    with pytest.raises(BulkWriteError) as error:
        db.payments.insert_many([{"idempotency_key": key, "amount": 1}
                                 for key in ("k1", "k2", "k3")])

    assert error.value.details["nInserted"] == 1
    assert [e["code"] for e in error.value.details["writeErrors"]] == [11000]
    assert sorted(db.payments.distinct("idempotency_key")) == ["k1", "k2"]


@pytest.mark.nx_gap("a unique index accepts any number of documents missing the field; MongoDB "
                    "indexes them as null and rejects the second (use sparse/partial indexes)")
def test_unique_index_counts_a_missing_field_as_one_null_key(db: Database) -> None:
    db.payments.create_index("idempotency_key", unique=True)
    db.payments.insert_one({"amount": 100})

    with pytest.raises(DuplicateKeyError):
        db.payments.insert_one({"amount": 200})


def test_compound_index_with_mixed_directions_is_created_and_sorting_on_it_works(
        products: Collection) -> None:
    name = products.create_index([("category", ASCENDING), ("price", DESCENDING)])
    again = products.create_index([("category", ASCENDING), ("price", DESCENDING)])

    by_category_then_dearest = products.find({"category": {"$in": ["gadgets", "widgets"]}}).sort(
        [("category", ASCENDING), ("price", DESCENDING)])

    assert name == again == "category_1_price_-1"
    assert skus(by_category_then_dearest) == ["G-2", "G-1", "G-3", "W-3", "W-1", "W-2"]


@pytest.mark.nx_gap("index_information() renames indexes (idx_<collection>_<fields>) and reports "
                    "every key as ascending")
def test_index_information_reports_names_and_key_directions(products: Collection) -> None:
    products.create_index([("category", ASCENDING), ("price", DESCENDING)])
    products.create_index("sku", unique=True)

    indexes = products.index_information()

    assert indexes["category_1_price_-1"]["key"] == [("category", 1), ("price", -1)]
    assert indexes["sku_1"]["unique"] is True


# --- aggregation ----------------------------------------------------------------------------


def test_aggregate_matches_groups_sums_and_sorts(db: Database) -> None:
    db.orders.insert_many([
        order("o1", "confirmed", 2500, [("W-1", 2)]),
        order("o2", "confirmed", 1000, [("G-1", 1)]),
        order("o3", "cancelled", 9999, [("G-2", 1)]),
        order("o4", "pending", 300, [("G-3", 2)]),
        order("o5", "pending", 700, [("W-1", 1)]),
        order("o6", "confirmed", 500, [("B-1", 1)]),
    ])

    per_status = list(db.orders.aggregate([
        {"$match": {"status": {"$ne": "cancelled"}}},
        {"$group": {"_id": "$status", "revenue": {"$sum": "$total"}, "orders": {"$sum": 1}}},
        {"$sort": {"revenue": DESCENDING}},
    ]))

    assert per_status == [{"_id": "confirmed", "revenue": 4000, "orders": 3},
                          {"_id": "pending", "revenue": 1000, "orders": 2}]


def test_aggregate_totals_one_figure_across_all_matching_documents(db: Database) -> None:
    db.payments.insert_many([
        {"kind": "capture", "amount": 2500}, {"kind": "capture", "amount": 1000},
        {"kind": "refund", "amount": 1000}, {"kind": "authorisation", "amount": 7},
    ])

    totals = {row["_id"]: row["amount"] for row in db.payments.aggregate([
        {"$match": {"kind": {"$in": ["capture", "refund"]}}},
        {"$group": {"_id": "$kind", "amount": {"$sum": "$amount"}}},
    ])}
    everything = list(db.payments.aggregate([{"$group": {"_id": None, "n": {"$sum": 1}}}]))

    assert totals == {"capture": 3500, "refund": 1000}
    assert everything == [{"_id": None, "n": 4}]


@pytest.mark.nx_gap("$sum over a group whose documents all lack the field gives None, not 0")
def test_aggregate_sum_of_a_missing_field_is_zero(db: Database) -> None:
    db.payments.insert_many([{"kind": "capture", "amount": 100}, {"kind": "refund"}])

    sums = list(db.payments.aggregate([
        {"$group": {"_id": "$kind", "amount": {"$sum": "$amount"}}}, {"$sort": {"_id": 1}}]))

    assert sums == [{"_id": "capture", "amount": 100}, {"_id": "refund", "amount": 0}]


# --- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("term", "expected"), [
    pytest.param("widget", ["B-1", "W-1", "W-2", "W-3"], id="anywhere-any-case"),
    pytest.param("GADGET", ["G-1", "G-2", "G-3"], id="upper-case-term"),
    pytest.param("v2.0", ["G-2"], id="dot-is-literal"),
    pytest.param("no such thing", [], id="no-match"),
])
def test_regex_search_is_case_insensitive_and_escapes_user_input(products: Collection, term: str,
                                                                 expected: list[str]) -> None:
    query = {"name": {"$regex": re.escape(term), "$options": "i"}}

    assert sorted(skus(products.find(query))) == expected
    assert products.count_documents(query) == len(expected)


def test_regex_search_combines_with_other_filters_sort_and_paging(products: Collection) -> None:
    query = {"$or": [{"name": {"$regex": "^widget|book", "$options": "i"}},
                     {"tags": "paper"}],
             "price": {"$lt": 4000}}

    first_page = products.find(query).sort("price", ASCENDING).limit(2)
    second_page = products.find(query).sort("price", ASCENDING).skip(2).limit(2)

    assert skus(first_page) == ["W-2", "B-2"]
    assert skus(second_page) == ["B-1"]
    assert products.count_documents(query) == 3


@pytest.mark.nx_gap("a compiled pattern (re.compile / bson Regex) in a query fails with "
                    "OperationFailure \"type 'Regex' is not supported\"; use {'$regex': ...}")
def test_compiled_regex_pattern_is_accepted_in_a_query(products: Collection) -> None:
    assert sorted(skus(products.find({"name": re.compile("^gadget", re.IGNORECASE)}))) == [
        "G-2", "G-3"]


# --- upsert, delete, projection -------------------------------------------------------------


def test_upsert_inserts_once_then_updates_the_same_document(db: Database) -> None:
    def record_payment(key: str, amount: int) -> UpdateResult:
        return db.payments.update_one(
            {"idempotency_key": key},
            {"$setOnInsert": {"amount": amount, "first_seen": T0}, "$inc": {"seen": 1}},
            upsert=True,
        )

    created = record_payment("k1", 500)
    repeated = record_payment("k1", 999)

    assert created.upserted_id is not None and created.matched_count == 0
    assert repeated.upserted_id is None and repeated.matched_count == 1
    assert db.payments.find_one({"idempotency_key": "k1"}, {"_id": 0}) == {
        "idempotency_key": "k1", "amount": 500, "first_seen": T0, "seen": 2}
    assert db.payments.count_documents({}) == 1


@pytest.mark.nx_gap("find_one_and_update(..., upsert=True) ignores $setOnInsert when it inserts")
def test_find_one_and_update_upsert_applies_set_on_insert(db: Database) -> None:
    created = db.stock.find_one_and_update(
        {"_id": "NEW-1"}, {"$setOnInsert": {"available": 10}, "$inc": {"reserved": 0}},
        upsert=True, return_document=ReturnDocument.AFTER,
    )

    assert created == {"_id": "NEW-1", "available": 10, "reserved": 0}


def test_delete_many_removes_all_matches_and_nothing_else(products: Collection) -> None:
    result = products.delete_many({"category": "widgets"})
    none = products.delete_many({"category": "toys"})

    assert (result.deleted_count, none.deleted_count) == (3, 0)
    assert sorted(skus(products.find())) == ["B-1", "B-2", "G-1", "G-2", "G-3"]


def test_projection_returns_only_the_requested_top_level_fields(products: Collection) -> None:
    included = products.find_one({"sku": "W-1"}, {"name": 1, "price": 1})
    without_id = products.find_one({"sku": "W-1"}, {"_id": 0, "name": 1})
    excluded = products.find_one({"sku": "W-1"}, {"tags": 0, "dimensions": 0, "added": 0})

    assert set(included) == {"_id", "name", "price"} and included["price"] == 1250
    assert without_id == {"name": "Blue Widget"}
    assert set(excluded) == {"_id", "sku", "name", "category", "price", "stock"}


@pytest.mark.nx_gap("a dotted projection returns a flat key {'dimensions.weight_g': ...} and "
                    "excluding a dotted field excludes nothing")
def test_projection_of_a_nested_field_keeps_its_nesting(products: Collection) -> None:
    assert products.find_one({"sku": "W-1"}, {"_id": 0, "dimensions.weight_g": 1}) == {
        "dimensions": {"weight_g": 120}}
    assert "weight_g" not in products.find_one({"sku": "W-1"}, {"dimensions.weight_g": 0})[
        "dimensions"]


# --- more updates nx-27017 gets wrong -------------------------------------------------------


@pytest.mark.nx_gap("find_one_and_replace(..., return_document=AFTER) stores the ObjectId _id "
                    "as its hex string")
def test_find_one_and_replace_keeps_the_object_id(db: Database) -> None:
    saga_id = db.sagas.insert_one({"state": "started"}).inserted_id

    replaced = db.sagas.find_one_and_replace({"_id": saga_id}, {"state": "compensating"},
                                             return_document=ReturnDocument.AFTER)

    assert replaced == {"_id": saga_id, "state": "compensating"}
    assert db.sagas.find_one({"state": "compensating"})["_id"] == saga_id


@pytest.mark.nx_gap("the positional operator ($) writes a literal 'items.$.quantity' field "
                    "(and reports it modified) instead of updating the matched element")
def test_positional_operator_updates_the_matched_array_element(db: Database) -> None:
    db.orders.insert_one(order("o1", "pending", 0, [("W-1", 1), ("G-1", 1)]))

    db.orders.update_one({"_id": "o1", "items.sku": "G-1"}, {"$inc": {"items.$.quantity": 4}})

    assert db.orders.find_one({"_id": "o1"}, {"_id": 0, "items": 1}) == {
        "items": [{"sku": "W-1", "quantity": 1}, {"sku": "G-1", "quantity": 5}]}


# --- durability -----------------------------------------------------------------------------


def test_data_and_unique_indexes_survive_a_server_restart(own_data_dir: Path) -> None:
    port = free_ports(1)[0]
    with running_mongo(own_data_dir, port) as url, MongoClient(url) as before:
        before.shop.products.insert_many([dict(product) for product in CATALOGUE])
        before.shop.products.create_index("sku", unique=True)
        before.shop.products.update_one({"sku": "W-1"}, {"$inc": {"stock": -1}})
        before.users.accounts.insert_one({"email": "ada@example.org"})

    with running_mongo(own_data_dir, port) as url, MongoClient(url) as after:
        assert after.shop.products.count_documents({}) == len(CATALOGUE)
        assert after.shop.products.find_one({"sku": "W-1"})["stock"] == 3
        assert after.users.accounts.find_one({}, {"_id": 0}) == {"email": "ada@example.org"}
        assert {"shop", "users"} <= set(after.list_database_names())
        with pytest.raises(DuplicateKeyError):
            after.shop.products.insert_one({"sku": "W-1"})


def test_acknowledged_writes_survive_the_server_being_killed(own_data_dir: Path) -> None:
    own_data_dir.mkdir(parents=True)
    port = free_ports(1)[0]
    url = f"mongodb://{LOOPBACK}:{port}/"
    server = subprocess.Popen(mongo_command(own_data_dir, port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_mongo(url)
        with MongoClient(url) as before:
            for number in range(100):
                before.orders.saga_log.insert_one({"step": number})
            before.orders.saga_log.update_one({"step": 99}, {"$set": {"state": "done"}})
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # a crash: no chance to flush or close anything
        server.wait()

    with running_mongo(own_data_dir, port) as url, MongoClient(url) as after:
        assert after.orders.saga_log.count_documents({}) == 100
        assert after.orders.saga_log.find_one({"step": 99})["state"] == "done"


# --- what the server counts -----------------------------------------------------------------


def test_server_status_counts_operations_as_mongod_does(db: Database) -> None:
    """`make bench` reads these to count the database operations of an order."""
    def counters() -> dict[str, int]:
        return db.command("serverStatus")["opcounters"]

    before = counters()
    db.events.insert_many([{"n": 1}, {"n": 2}, {"n": 3}])  # one command, three documents
    db.events.insert_one({"n": 4})
    db.events.find_one({"n": 1})
    list(db.events.find({"n": {"$gte": 2}}))
    db.events.update_one({"n": 1}, {"$set": {"seen": True}})
    db.events.bulk_write([UpdateOne({"n": 2}, {"$set": {"seen": True}}),
                          UpdateOne({"n": 3}, {"$set": {"seen": True}}), DeleteOne({"n": 4})])
    after = counters()

    assert {field: after[field] - before[field] for field in ("insert", "query", "update",
                                                              "delete")} == {
        "insert": 4, "query": 2, "update": 3, "delete": 1}
    assert after["command"] > before["command"]  # serverStatus itself, at least
