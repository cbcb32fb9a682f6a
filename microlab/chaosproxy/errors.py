"""The API's errors: an HTTP status and the exact message Toxiproxy sends with it."""

from __future__ import annotations


class ApiError(Exception):
    """An error the API reports as `{"error": message, "status": status}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request_body(reason: str) -> ApiError:
    return ApiError(400, f"bad request body: {reason}")


def missing_field(what: str) -> ApiError:
    return ApiError(400, f"missing required field: {what}")


def listen_failed(message: str) -> ApiError:
    """A network error from starting a listener; Go reports these as a bare 500."""
    return ApiError(500, message)


PROXY_NOT_FOUND = ApiError(404, "proxy not found")
PROXY_EXISTS = ApiError(409, "proxy already exists")
INVALID_STREAM = ApiError(400, "stream was invalid, can be either upstream or downstream")
INVALID_TOXIC_TYPE = ApiError(400, "invalid toxic type")
TOXIC_EXISTS = ApiError(409, "toxic already exists")
TOXIC_NOT_FOUND = ApiError(404, "toxic not found")
