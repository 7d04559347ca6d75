"""The one error type of the export half: its message is the one line the user sees."""


class ExportError(Exception):
    """An export step failed; str(error) says what failed and what to do."""
