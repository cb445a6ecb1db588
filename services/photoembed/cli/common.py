"""What every command shares: its logger, and the settings with logging configured from them."""

from __future__ import annotations

from photoembed.config import Settings, get_settings
from photoembed.logging import configure_logging, get_logger

log = get_logger("photoembed.cli")


def configured_settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return settings
