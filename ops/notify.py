"""Notifications through Apprise: RETRAIN_NOTIFY holds one or more Apprise URLs (`mailto://…`,
`slack://…`, `json://host/hook`, separated by spaces or commas), or RETRAIN_NOTIFY_FILE names a file that
holds them (what `make cron-install` writes, mode 0600, so the URLs are not on cron's command line).

The URLs are secrets (tokens, passwords): they are only ever written masked (Apprise's privacy form), and
they never reach the pipeline's environment, MLflow parameters or tags. A notification that cannot be
sent is logged and changes nothing else."""

import logging
import os
from pathlib import Path

logger = logging.getLogger("retrain")

NOTIFY_ENV = "RETRAIN_NOTIFY"
NOTIFY_FILE_ENV = "RETRAIN_NOTIFY_FILE"
NOTIFY_ON_ENV = "RETRAIN_NOTIFY_ON"
SECRET_ENVS = (NOTIFY_ENV,)


def notification_urls(environ: os._Environ | dict) -> list[str]:
    text = environ.get(NOTIFY_ENV, "")
    path = environ.get(NOTIFY_FILE_ENV, "")
    if not text and path and Path(path).is_file():
        text = Path(path).read_text()
    return [url for url in text.replace(",", " ").split() if url]


def masked(url: str) -> str:
    """The URL as Apprise prints it with privacy on (passwords and tokens starred), else its scheme."""
    import apprise

    try:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin:
            return plugin.url(privacy=True)
    except Exception:  # noqa: BLE001
        pass
    return url.split("://", 1)[0] + "://…"


def send(urls: list[str], title: str, body: str) -> bool:
    """Send to every URL; True when all of them took it. Failures are logged (masked), never raised."""
    if not urls:
        return True
    try:
        import apprise
    except ImportError as error:
        logger.warning("notification not sent: %s (pip install apprise: requirements/host.txt)", error)
        return False
    # Apprise's own log lines can carry host names and paths of the URLs: ours say what is needed, masked.
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    all_sent = True
    for url in urls:
        shown = masked(url)
        try:
            notifier = apprise.Apprise()
            if not notifier.add(url):
                logger.warning("notification URL not understood by Apprise: %s", shown)
                all_sent = False
                continue
            if notifier.notify(body=body, title=title, body_format=apprise.NotifyFormat.TEXT):
                logger.info("notification sent to %s", shown)
            else:
                logger.warning("notification to %s could not be sent", shown)
                all_sent = False
        except Exception as error:  # noqa: BLE001 - a notification never changes the night's outcome
            logger.warning("notification to %s failed: %s", shown, type(error).__name__)
            all_sent = False
    return all_sent
