"""Two versions in one server: the champion (MODEL_DIR) and, optionally, a challenger (CHALLENGER_DIR), and
the route that decides which one answers a request (ROUTE).

Why one server holding both rather than two deployments behind a traffic splitter: on one machine the two
versions share the cores either way, and in one process the shadow copy of a request costs no second
network hop or serialisation, shadow work can be dropped the moment the champion's callers need the
cores (shadow.py), and a caller's stickiness, the request id and the capture of both answers live in one
place. KServe's canary (canaryTrafficPercent) splits between two deployments and is rendered for
Kubernetes; it has no mirroring, so shadow runs inside the pod there too.

ROUTE:
  shadow       every request is answered by the champion; the challenger scores a copy off the request
               path (captured with served=false, never returned), dropped and counted when saturated.
  split:<p>    p percent of callers (0-100, decimals allowed) are answered by the challenger. Sticky: the
               caller's routing key (the request parameter `routing_key`, else the HTTP header or gRPC
               metadata `x-routing-key`, else the request id) is hashed, so a caller that sends the same
               key is always answered by the same version.
A request naming a version (`/v2/models/{name}/versions/{v}/infer`, gRPC `model_version`) reaches that
version directly (route "direct").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .config import ConfigError, Settings, load_settings

ROUTE_CHAMPION = "champion"
ROUTE_CHALLENGER = "challenger"
ROUTE_SHADOW = "shadow"
ROUTE_DIRECT = "direct"
ROUTING_KEY_PARAMETER = "routing_key"
ROUTING_KEY_HEADER = "x-routing-key"
_BUCKETS = 10_000


@dataclass(frozen=True)
class Route:
    """How requests that name no version are answered."""

    mode: str  # "single" (no challenger), "shadow" or "split"
    percent: float = 0.0  # split: the share of callers the challenger answers

    def answers_from_challenger(self, key: str) -> bool:
        """split: whether the caller with this routing key is the challenger's (stable across processes)."""
        if self.mode != "split":
            return False
        bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big")
        return bucket % _BUCKETS < self.percent * _BUCKETS / 100


def parse_route(raw: str, has_challenger: bool) -> Route:
    """ROUTE's value; ConfigError naming the fix when it is malformed or does not fit CHALLENGER_DIR."""
    raw = raw.strip().lower()
    if not has_challenger:
        if raw:
            raise ConfigError(f"ROUTE={raw!r} needs a challenger: set CHALLENGER_DIR, or unset ROUTE")
        return Route("single")
    if raw in ("", ROUTE_SHADOW):
        return Route(ROUTE_SHADOW)
    if raw.startswith("split:"):
        try:
            percent = float(raw.split(":", 1)[1])
        except ValueError:
            percent = -1.0
        if 0.0 <= percent <= 100.0:
            return Route("split", percent)
    raise ConfigError(f"ROUTE must be 'shadow' or 'split:<percent 0-100>', e.g. split:10; got {raw!r}")


@dataclass(frozen=True)
class Versions:
    """The champion's settings (the server's, from MODEL_DIR), the challenger's if any, and the route."""

    champion: Settings
    challenger: Settings | None
    route: Route

    @property
    def all(self) -> list[Settings]:
        return [self.champion] + ([self.challenger] if self.challenger is not None else [])


def load_versions(champion: Settings, env: Mapping[str, str] | None = None) -> Versions:
    """The challenger of CHALLENGER_DIR (its version from its serving_config.json, or CHALLENGER_VERSION),
    with every other setting the champion's; it must serve the same name and label set under another
    version."""
    env = os.environ if env is None else env
    challenger_dir = env.get("CHALLENGER_DIR", "").strip()
    route = parse_route(env.get("ROUTE", ""), bool(challenger_dir))
    if not challenger_dir:
        return Versions(champion, None, route)
    challenger = load_settings(
        {
            **env,
            "MODEL_DIR": challenger_dir,
            "MODEL_NAME": champion.model_name,
            "MODEL_VERSION": env.get("CHALLENGER_VERSION", ""),
        }
    )
    if challenger.model_version == champion.model_version:
        raise ConfigError(
            f"champion ({champion.model_dir}) and challenger ({challenger.model_dir}) are both version "
            f"'{champion.model_version}'; serve two different versions, or set CHALLENGER_VERSION"
        )
    if challenger.labels != champion.labels:
        raise ConfigError(
            f"the challenger's labels {list(challenger.labels)} differ from the champion's "
            f"{list(champion.labels)}; both versions must classify into the same label set"
        )
    return Versions(champion, challenger, route)
