"""The email service: records every email the system sends."""
