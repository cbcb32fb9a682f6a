"""The inventory service's app factory.

For now it only answers /health (with its database's status); its API comes with the services
issue.
"""

from flask import Flask

from patterns.mongo import connect_database, ping
from patterns.settings import ServiceSettings
from patterns.web import create_service_app


def create_app(settings: ServiceSettings) -> Flask:
    database = connect_database(settings)
    return create_service_app(settings.name, health_checks={"mongo": lambda: ping(database)})
