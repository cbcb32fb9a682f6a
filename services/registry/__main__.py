from patterns.serve import run_service
from services.registry.app import create_app

run_service("registry", create_app)
