"""`make spark-cluster` on a port something else holds says so and starts nothing."""

import socket

import pytest

from conductor.spark_cluster import main


def test_a_taken_port_is_named_with_the_fix(capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            main(["--port", str(port)])
    assert exit_info.value.code == 2
    assert f"port {port} is taken on 127.0.0.1" in capsys.readouterr().err
