"""The service's client errors and their one JSON shape: {"error": {"code", "message"}}."""

from starlette.responses import JSONResponse


class HTTPError(Exception):
    """A client error: status, a short code, one sentence."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)
