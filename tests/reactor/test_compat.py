"""The stdlib's own servers, built on socketserver, run unchanged on reactor.

Each module is loaded afresh with ``sys.modules["socketserver"]`` pointing
at reactor, exactly what ``import reactor as socketserver`` means to them,
without disturbing the copies the rest of the process uses.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
import xmlrpc.client

import pytest
from conftest import CLIENT_TIMEOUT, ServingThread

import reactor


def load_on_reactor(name: str, **also: object) -> object:
    """A private copy of stdlib module ``name`` whose socketserver is reactor."""
    replaced = {"socketserver": reactor, **also}
    saved = {key: sys.modules.get(key) for key in replaced}
    sys.modules.update(replaced)
    try:
        spec = importlib.util.find_spec(name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


@pytest.fixture(scope="module")
def http_server():
    return load_on_reactor("http.server")


@pytest.mark.timeout(20)
def test_http_server_serves_a_file(http_server, places, tmp_path):
    (tmp_path / "hello.txt").write_bytes(b"served by reactor\n")
    assert issubclass(http_server.HTTPServer, reactor.TCPServer)

    class Quiet(http_server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    with ServingThread(http_server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)) as server:
        host, port = server.server_address[:2]
        for _ in range(3):  # keep-alive off in http.client: each is a new connection
            with urllib.request.urlopen(f"http://{host}:{port}/hello.txt", timeout=CLIENT_TIMEOUT) as reply:
                assert reply.status == 200
                assert reply.read() == b"served by reactor\n"
    assert server.request_table.totals["opened"] == 3


@pytest.mark.timeout(20)
def test_xmlrpc_server_with_bind_and_activate_false_and_its_own_get_request(http_server, places):
    xmlrpc_server = load_on_reactor("xmlrpc.server", **{"http.server": http_server})
    accepted = []

    class Server(xmlrpc_server.SimpleXMLRPCServer):
        def get_request(self):
            request, client_address = self.socket.accept()
            accepted.append(client_address)
            return request, client_address

    server = Server(("127.0.0.1", 0), logRequests=False, bind_and_activate=False)
    assert isinstance(server, reactor.TCPServer)
    server.server_bind()
    server.server_activate()
    server.register_function(pow)
    server.register_function(lambda *words: " ".join(words).upper(), "shout")
    with ServingThread(server):
        host, port = server.server_address[:2]
        proxy = xmlrpc.client.ServerProxy(f"http://{host}:{port}/")
        with proxy:
            assert proxy.pow(2, 10) == 1024
            assert proxy.shout("on", "reactor") == "ON REACTOR"
    assert len(accepted) == 2


@pytest.mark.timeout(20)
def test_wsgiref_simple_server_runs_a_wsgi_app(http_server):
    simple_server = load_on_reactor("wsgiref.simple_server", **{"http.server": http_server})

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"hello {environ['PATH_INFO']}".encode()]

    class Quiet(simple_server.WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = simple_server.make_server("127.0.0.1", 0, app, handler_class=Quiet)
    assert isinstance(server, reactor.TCPServer)
    with ServingThread(server):
        url = f"http://127.0.0.1:{server.server_address[1]}/wsgi"
        with urllib.request.urlopen(url, timeout=CLIENT_TIMEOUT) as reply:
            assert reply.read() == b"hello /wsgi"
