"""The Docker engine client, kept free of gRPC imports so the light host environment can use it."""

import docker
import docker.errors


def docker_client() -> docker.DockerClient:
    """A client of the engine, or an error saying how to get one."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise RuntimeError(
            f"no Docker engine answers ({error}). Start one (`make engine` on a Debian host as root) or "
            "mount /var/run/docker.sock into this container."
        ) from None
    return client


def containers_where(engine: docker.DockerClient | None = None, *, stopped: bool = True, **filters) -> list:
    """The containers that match `filters`, `stopped` ones too unless told otherwise.

    The engine lists ids, then each is inspected: a `docker run --rm` container that ends in between
    (a step cancelled, a server removed) is gone by then. It is left out, not raised as NotFound: every
    caller here polls for containers that are on their way out.
    """
    engine = engine or docker_client()
    return engine.containers.list(all=stopped, filters=filters, ignore_removed=True)
