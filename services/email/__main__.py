from patterns.serve import run_service
from services.email.app import create_app

run_service("email", create_app)
