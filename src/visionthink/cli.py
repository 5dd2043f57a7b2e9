"""Shared behaviour of the entry points."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from visionthink.errors import InputError


def exit_on_input_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends the program with its message on stderr and exit code 2, not a traceback."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (InputError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
