"""Silencing one known, harmless library log message without muting the logger."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def drop_log_records(logger: str, fragment: str) -> Iterator[None]:
    """Within the block, drop records of ``logger`` whose message contains ``fragment``."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return fragment not in record.getMessage()

    log = logging.getLogger(logger)
    flt = _Drop()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)
