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
