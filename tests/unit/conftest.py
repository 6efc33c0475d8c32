"""Unit tests run with sockets off: the aggregate's rules are tested on the in-memory store, and
nothing here may reach a network (asyncio's own socketpair is not a connection)."""

import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise RuntimeError("a unit test tried to connect to the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
