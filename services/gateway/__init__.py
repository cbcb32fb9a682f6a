"""The gateway service: API gateway: routing, JWT auth, rate limits, breakers."""
