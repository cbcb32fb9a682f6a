from patterns.serve import run_service
from services.inventory.app import create_app

run_service("inventory", create_app)
