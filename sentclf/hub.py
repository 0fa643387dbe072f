"""Is the Hugging Face hub usable? Asked once, quickly, before a hub id is handed to a library whose
client would otherwise retry for tens of seconds before failing."""

import os
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 5.0
TRUE_VALUES = ("1", "true", "yes", "on")


def offline_reason(variables: tuple[str, ...] = ("HF_HUB_OFFLINE",)) -> str | None:
    """Why the hub cannot be used, or None: one of the offline `variables` is set, or the endpoint does
    not answer. Read at call time: the libraries read these variables once, at import."""
    for variable in variables:
        value = os.environ.get(variable, "")
        if value.strip().lower() in TRUE_VALUES:
            return f"offline mode is set ({variable}={value})"
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        # One short request (honouring proxy variables) rather than the hub client's long retries.
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return None  # an HTTP answer of any status: the hub is reachable
    except (OSError, ValueError) as error:
        return f"not reachable at {endpoint} ({getattr(error, 'reason', error)})"
    return None
