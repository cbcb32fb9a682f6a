from patterns.serve import run_service
from services.orders.app import create_app

run_service("orders", create_app)
