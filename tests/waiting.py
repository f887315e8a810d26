"""Waiting for real services in tests: poll a check until it holds, fail loudly when it never does."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 240, every: float = 1.0) -> Any:
    """The first truthy result of ``check()``; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
