"""Orders' admin view of its saga log, `GET /admin/sagas`: what the dashboard lists as sagas."""

from __future__ import annotations

from tests.services.test_orders_api import World, world  # noqa: F401 (the fixture)


def test_the_latest_sagas_come_newest_first_with_their_steps(world: World) -> None:  # noqa: F811
    confirmed = world.place(("prd_mug", 1)).get_json()
    world.provider(failure_rate=1.0)
    declined = world.place(("prd_mug", 1)).get_json()

    answer = world.orders.get("/admin/sagas?limit=5", headers=world.admin)
    assert answer.status_code == 200
    latest, earlier = answer.get_json()["items"][:2]
    declined_saga = world.order(declined["error"]["order_id"])["saga_id"]
    assert (latest["id"], earlier["id"]) == (declined_saga, confirmed["saga_id"])
    assert earlier["status"] == "completed"
    assert {step["state"] for step in earlier["steps"]} == {"done"}
    assert latest["status"] == "compensated"
    states = {step["name"]: step["state"] for step in latest["steps"]}
    assert "compensated" in states.values() and "failed" in states.values(), states


def test_the_saga_log_is_for_admins_and_checks_its_limit(world: World) -> None:  # noqa: F811
    assert world.orders.get("/admin/sagas").status_code == 401
    assert world.orders.get("/admin/sagas", headers=world.user()).status_code == 403
    assert world.orders.get("/admin/sagas?limit=0", headers=world.admin).status_code == 400
    assert world.orders.get("/admin/sagas?limit=abc", headers=world.admin).status_code == 400
    assert world.orders.get("/admin/sagas", headers=world.admin).get_json() == {"items": []}
