"""Where a service binds (HOST) and where its peers reach it (ADVERTISE_HOST) are two settings."""

from __future__ import annotations

import socket

import pytest

from patterns.serve import bind_address
from patterns.settings import ServiceSettings, SettingsError, advertised_host_for


def settings_from(**env: str) -> ServiceSettings:
    return ServiceSettings.from_env("orders", {"PORT": "3003", **env})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_a_wildcard_host_advertises_the_machines_hostname(host):
    assert advertised_host_for(host, hostname=lambda: "orders-7f3a") == "orders-7f3a"


def test_from_env_a_wildcard_host_advertises_this_hostname_and_binds_the_wildcard():
    settings = settings_from(HOST="0.0.0.0")
    assert settings.host == "0.0.0.0"
    assert settings.advertised_host == socket.gethostname() != "0.0.0.0"
    assert settings.advertised_url == f"http://{socket.gethostname()}:3003"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "127.0.0.1"])
def test_an_explicit_advertise_host_wins(host):
    settings = settings_from(HOST=host, ADVERTISE_HOST="orders")
    assert settings.host == host
    assert (settings.advertised_host, settings.advertised_port) == ("orders", 3003)
    assert advertised_host_for(host, "orders", hostname=lambda: "elsewhere") == "orders"


@pytest.mark.parametrize("env, advertised", [
    ({}, ("127.0.0.1", 3003)),                                 # HOST's default
    ({"HOST": "10.0.0.5"}, ("10.0.0.5", 3003)),
    ({"HOST": "10.0.0.5", "ADVERTISE_HOST": ""}, ("10.0.0.5", 3003)),  # empty is unset
    ({"HOST": "0.0.0.0", "ADVERTISE_HOST": "orders", "ADVERTISE_PORT": "8080"},
     ("orders", 8080)),                                        # a published port
])
def test_a_concrete_host_is_advertised_unchanged_on_port_unless_told(env, advertised):
    settings = settings_from(**env)
    assert (settings.advertised_host, settings.advertised_port) == advertised
    assert settings.port == 3003


def test_an_ipv6_advertised_address_is_bracketed_in_urls_and_the_bind():
    settings = settings_from(HOST="::", ADVERTISE_HOST="fd00::7")
    assert settings.advertised_url == "http://[fd00::7]:3003"
    assert bind_address(settings) == "[::]:3003"
    assert bind_address(settings_from(HOST="0.0.0.0")) == "0.0.0.0:3003"


@pytest.mark.parametrize("env, message", [
    ({"ADVERTISE_HOST": "0.0.0.0"}, "ADVERTISE_HOST must be an address peers can reach"),
    ({"ADVERTISE_HOST": "::"}, "ADVERTISE_HOST must be an address peers can reach"),
    ({"ADVERTISE_PORT": "http"}, "ADVERTISE_PORT must be a port number"),
    ({"ADVERTISE_PORT": "70000"}, "ADVERTISE_PORT must be a port number"),
])
def test_an_advertised_address_nobody_can_call_is_refused_at_start(env, message):
    with pytest.raises(SettingsError, match=message):
        settings_from(HOST="0.0.0.0", **env)
    if "ADVERTISE_HOST" in env:  # built directly, as tests do, too
        with pytest.raises(SettingsError, match=message):
            ServiceSettings(name="orders", port=3003, advertise_host=env["ADVERTISE_HOST"])
