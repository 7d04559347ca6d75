"""The one error type of the export half: its message is the one line the user sees."""


class ExportError(Exception):
    """An export step failed; str(error) says what failed and what to do."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """A library's error message folded onto one line, cut at `limit` characters."""
    return " ".join(str(error).split())[:limit]
