"""Logging configuration for the service: a factory, never applied on import (arq's ``logs.py``)."""

import logging.config
import os


def configure_logging(level: str | None = None) -> None:
    """Service logs to stderr, one line per event; the tasks' own output goes to the runs' log files."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"handlers": ["stderr"], "level": level or os.environ.get("PEACH_LOG_LEVEL", "INFO")},
            # the console shows one line per run; schema migrations and HTTP access only when they fail
            "loggers": {"uvicorn.access": {"level": "WARNING"}, "alembic": {"level": "WARNING"}},
        }
    )
