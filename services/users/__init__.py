"""The users service: accounts, login and JWTs, profiles."""
