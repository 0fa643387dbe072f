"""Ports drawn together are distinct: a server given one port twice fails to bind its second listener."""

import socket

from sentclf.containers import free_ports


def test_ports_drawn_together_are_distinct_and_bindable() -> None:
    for _ in range(200):  # the kernel hands a just-released port out again often enough to show in 200 draws
        ports = free_ports(3)
        assert len(set(ports)) == 3
    with socket.socket() as a, socket.socket() as b, socket.socket() as c:
        for sock, port in zip((a, b, c), ports, strict=True):
            sock.bind(("127.0.0.1", port))
