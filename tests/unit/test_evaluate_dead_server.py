"""evaluate's description of a server container that has just died (a real container, so the Docker engine:
the whole module is in the engine group of `make test`'s workers, tests/conftest.py)."""

import pytest

from sentclf.containers import CONTAINER_LABEL, checkout_labels
from sentclf.images import resolve_base_image
from tests.conftest import require_docker

import load


@pytest.mark.docker
def test_a_server_that_just_died_is_described_as_exited_not_running():
    """The client sees the socket close before the engine marks the container exited: the message must
    wait for the engine instead of calling a dead server `running` (a real container that ends itself)."""
    require_docker()
    import docker

    client = docker.from_env()
    image = resolve_base_image(client)  # any image with `sleep`: the base every image here is built FROM
    container = client.containers.run(
        image,
        ["sleep", "1"],
        detach=True,
        labels={CONTAINER_LABEL: "1", **checkout_labels()},
        network_mode="none",
    )
    try:
        assert "is running" in load.describe(container, settle_s=0)
        described = load.describe(container, settle_s=10)
        assert f"server container {container.name} is exited (exit code 0" in described
    finally:
        container.remove(force=True)
