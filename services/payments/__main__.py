from patterns.serve import run_service
from services.payments.app import create_app

run_service("payments", create_app)
