"""Errors the user can fix. The CLI prints these as one line (exit code 2) unless ``--debug``; anything
else is a bug and keeps its traceback."""
from __future__ import annotations


class InputTypeError(TypeError):
    """An input of the wrong kind (e.g. uint8 images, float labels); the message says how to fix it."""


#: what ``ibau`` reports as ``error: <message>`` instead of a traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, InputTypeError, FileNotFoundError, IsADirectoryError,
                                                NotADirectoryError, PermissionError)
