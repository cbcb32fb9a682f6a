"""The registry service's app factory.

For now it only answers /health; its API comes with the services issue.
"""

from flask import Flask

from patterns.settings import ServiceSettings
from patterns.web import create_service_app


def create_app(settings: ServiceSettings) -> Flask:
    return create_service_app(settings.name)
