"""Entry point: `python -m sentclf_server` (configuration comes from the environment, see config.py)."""

from __future__ import annotations

import logging
import os
import sys

from .config import ConfigError, load_settings
from .feedback import feedback_from_env
from .server import serve
from .versions import load_versions

log = logging.getLogger("sentclf_server")


def main() -> int:
    """Configure logging, read settings and serve; returns the process exit code."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
        versions = load_versions(settings)
        feedback_from_env(os.environ, settings.model_name)  # FEEDBACK_MAX_MB checked before loading
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    try:
        serve(settings, versions)
    except Exception:
        log.exception("server failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
