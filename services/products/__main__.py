from patterns.serve import run_service
from services.products.app import create_app

run_service("products", create_app)
