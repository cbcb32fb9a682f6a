from patterns.serve import run_service
from services.notifications.app import create_app

run_service("notifications", create_app)
