"""The topology is the single source of truth: check it is consistent and used consistently."""

from __future__ import annotations

import importlib.util

import pytest

from microlab.topology import (Edge, free_ports, load_topology, peer_env_name, plan_ports,
                               service_env)

TOPOLOGY = load_topology()


def test_every_service_is_a_runnable_package():
    for service in TOPOLOGY.services.values():
        assert importlib.util.find_spec(f"{service.module}.__main__"), service.module
        assert importlib.util.find_spec(f"{service.module}.app"), service.module


def test_the_lesson_services_are_all_there():
    assert set(TOPOLOGY.services) == {"gateway", "users", "products", "orders", "inventory",
                                      "payments", "notifications", "email", "registry"}


def test_default_ports_are_distinct_and_proxies_do_not_clash():
    plan = plan_ports(TOPOLOGY)
    every_port = list(plan.ports.values()) + list(plan.proxy_ports.values())
    assert len(every_port) == len(set(every_port))
    assert plan.port("gateway") == 3000 and plan.port("mongo") == 27017


def test_every_edge_has_a_proxy_port_and_a_learner_friendly_name():
    plan = plan_ports(TOPOLOGY)
    names = [edge.name for edge in TOPOLOGY.edges()]
    assert "orders->payments" in names and "users->mongo" in names
    assert "orders->rabbitmq" in names
    assert set(plan.proxy_ports) == set(names)
    assert TOPOLOGY.edge("orders->payments") == Edge("orders", "payments")
    assert TOPOLOGY.edge("orders_to_payments") == Edge("orders", "payments")
    with pytest.raises(KeyError, match="microlab chaos list"):
        TOPOLOGY.edge("payments->orders")


def test_offset_shifts_every_port_we_bind_but_not_the_external_broker():
    plain, shifted = plan_ports(TOPOLOGY), plan_ports(TOPOLOGY, offset=100)
    for name, port in plain.ports.items():
        expected = port if name == "rabbitmq" else port + 100
        assert shifted.ports[name] == expected, name
    assert shifted.proxy_ports["orders->payments"] == plain.proxy_ports["orders->payments"] + 100


def test_free_plans_never_share_a_port():
    first, second = plan_ports(TOPOLOGY, free=True), plan_ports(TOPOLOGY, free=True)
    for plan in (first, second):
        ports = list(plan.ports.values()) + list(plan.proxy_ports.values())
        assert len(ports) == len(set(ports))
    assert first.port("rabbitmq") == 5672


def test_rabbitmq_port_comes_from_the_amqp_url():
    plan = plan_ports(TOPOLOGY, amqp_url="amqp://u:p@127.0.0.1:5673/vhost")
    assert plan.port("rabbitmq") == 5673


def test_service_env_points_each_hop_at_its_proxy_when_proxies_are_on():
    plan = plan_ports(TOPOLOGY)
    env = service_env(TOPOLOGY, plan, "orders", through_proxies=True,
                      amqp_url="amqp://guest:pw@127.0.0.1:5672/shop")
    assert env["PORT"] == str(plan.port("orders"))
    assert env["PAYMENTS_URL"] == f"http://127.0.0.1:{plan.proxy_ports['orders->payments']}"
    assert env["MONGO_URL"] == f"mongodb://127.0.0.1:{plan.proxy_ports['orders->mongo']}/"
    assert env["MONGO_DB"] == "orders"
    assert env["AMQP_URL"] == (
        f"amqp://guest:pw@127.0.0.1:{plan.proxy_ports['orders->rabbitmq']}/shop")
    assert env["CONSUL_URL"] == env[peer_env_name("registry")]


def test_service_env_points_straight_at_peers_without_proxies():
    plan = plan_ports(TOPOLOGY)
    env = service_env(TOPOLOGY, plan, "gateway", through_proxies=False)
    assert env["USERS_URL"] == plan.url("users")
    assert "MONGO_URL" not in env  # the gateway owns no data


def test_a_topology_naming_an_unknown_peer_is_rejected(tmp_path):
    broken = tmp_path / "topology.toml"
    broken.write_text("""
[infrastructure.mongo]
port = 1
description = "db"
[services.a]
port = 2
description = "a"
calls = ["ghost"]
[proxies]
base_port = 3
""")
    with pytest.raises(ValueError, match="a calls unknown service 'ghost'"):
        load_topology(broken)


def test_free_ports_are_distinct():
    ports = free_ports(50)
    assert len(set(ports)) == 50


def test_consumers_start_in_the_first_wave_before_the_services_that_publish_at_start():
    first, *later = TOPOLOGY.waves()
    assert {"inventory", "notifications", "email", "registry"} <= set(first)
    assert "products" in later[0] and "users" in later[0]  # they publish at start
    assert sum(len(wave) for wave in TOPOLOGY.waves()) == len(TOPOLOGY.services)
