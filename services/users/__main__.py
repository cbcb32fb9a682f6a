from patterns.serve import run_service
from services.users.app import create_app

run_service("users", create_app)
