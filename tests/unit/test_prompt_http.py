"""MOVA Prompt Enhance's requests against real misbehaving HTTP servers on 127.0.0.1 (tests/support/fake_llm_server.py's
ScriptedServer): ``timeout`` bounds the whole exchange however slowly a server answers, Cancel stops a request
within a second, every failure of the HTTP layer and every bad URL is an EnhanceError naming the problem and the
fix, and URLs are checked before any connection."""

import json
import socket
import time

import pytest

from comfyui_mova.nodes.prompts.llm_client import (BadReply, Cancelled, EnhanceError, ServerTimeout, ServerUnreachable,
                                           normalise_base_url)
from comfyui_mova.nodes.prompts.llm_http import MAX_REPLY_BYTES
from comfyui_mova.nodes.prompts.enhance import EnhanceSettings, enhance_prompt
from fake_llm_server import (VISION_MODEL, FakeLLMServer, ScriptedServer, completion, drip_headers, http_reply,
                             trickle_all, trickle_body, wait_for_hangup)

IDEA = "A tram passes in the rain. The audio shows rain."
GOOD = http_reply(200, completion("A tram passes in the rain.\n\nThe audio shows steady rain."))
SLACK = 0.8  # seconds a deadline may overrun on a busy 2-core machine (the poll is 0.05 s)


def _ask(url, timeout=1.0, should_stop=None, environ=None):
    return enhance_prompt(IDEA, None, EnhanceSettings(url, VISION_MODEL, timeout=timeout),
                          environ={} if environ is None else environ, should_stop=should_stop)


def _timed(call):
    start = time.monotonic()
    with pytest.raises(EnhanceError) as err:
        call()
    return err.value, time.monotonic() - start


_trickle_body = trickle_body(GOOD, 0.1)
_trickle_all = trickle_all(GOOD, 0.05)
_slow_headers = drip_headers(0.3, 100)


def _silent(conn, request):
    wait_for_hangup(conn)


@pytest.mark.parametrize("script, phase", [
    (_trickle_body, "while reading the reply's body"),
    (_trickle_all, "while waiting for the reply's headers"),
    (_slow_headers, "while waiting for the reply's headers"),
    (_silent, "while waiting for the reply's headers"),
])
def test_timeout_bounds_the_whole_exchange(script, phase):
    """A byte every 0.1 s, a header line every 0.3 s, or nothing: each socket read succeeds in time, but the
    request ends at the deadline, and the server sees the client hang up."""
    with ScriptedServer(script) as server:
        error, elapsed = _timed(lambda: _ask(server.url, timeout=1.0))
        assert isinstance(error, ServerTimeout) and phase in str(error), str(error)
        assert "within timeout (1 s" in str(error) and "Raise timeout" in str(error)
        assert 1.0 <= elapsed < 1.0 + SLACK, elapsed
        deadline = time.monotonic() + 2
        while not server.hangups and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.hangups and server.hangups[0] is not None and server.hangups[0] < 1.0 + SLACK


def test_timeout_is_one_budget_for_every_request_of_a_run():
    """A server that asks for max_completion_tokens and answers each request after 0.7 s: the retry is cut at the
    one deadline (1 s from the start), not given a second full timeout."""
    def script(conn, request):
        time.sleep(0.7)
        if b'"max_tokens"' in request["body"]:
            conn.sendall(http_reply(400, {"error": {"message": "Use 'max_completion_tokens' instead."}}))
        else:
            conn.sendall(GOOD)
    with ScriptedServer(script) as server:
        error, elapsed = _timed(lambda: _ask(server.url, timeout=1.0))
    assert isinstance(error, ServerTimeout) and elapsed < 1.0 + SLACK
    assert len(server.requests) == 2


@pytest.mark.parametrize("script", [_silent, _trickle_body])
def test_cancel_stops_a_request_within_a_second(script):
    with ScriptedServer(script) as server:
        start = time.monotonic()
        error, elapsed = _timed(lambda: _ask(server.url, timeout=60, should_stop=lambda: time.monotonic() - start
                                             > 0.3))
        assert isinstance(error, Cancelled) and "cancelled while waiting for" in str(error)
        assert elapsed < 0.3 + SLACK, elapsed
        deadline = time.monotonic() + 2
        while not server.hangups and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.hangups and server.hangups[0] < 0.3 + SLACK  # the socket was closed, not left hanging


def test_a_slow_but_steady_reply_within_the_deadline_is_taken():
    with ScriptedServer(lambda conn, request: (time.sleep(0.3), conn.sendall(GOOD))) as server:
        assert _ask(server.url, timeout=2).caption.startswith("A tram passes")


def _sends(data: bytes):
    def script(conn, request):
        conn.sendall(data)
        time.sleep(0.2)
    return script


CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("data, match", [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "the reply is not HTTP \\(it starts 'SSH-2.0-OpenSSH_9.6'\\)"),
    (b"", "closed the connection without any reply"),
    (b"\r\n\r\n", "not HTTP \\(its first line is empty\\)"),
    (b"HTTP/2.0 200 OK\r\n\r\n", "speaks 'HTTP/2.0', not HTTP/1.x"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "not HTTP \\(it starts 'HTTP/1.1 2x0 OK'\\)"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", "a line longer than 64 KiB in its headers"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Many: y\r\n" * 120 + b"\r\n", "more than 100 header lines"),
    (CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", "chunked encoding is broken"),
    (CHUNKED + b"40\r\n{\"choices\"", "chunked encoding is broken"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"choices\": []", "broke off .*after 14 bytes"),
    (f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_REPLY_BYTES + 1}\r\n\r\n".encode(), "more than the 16 MiB"),
])
def test_http_layer_failures_name_the_problem(data, match):
    with ScriptedServer(_sends(data)) as server:
        error, elapsed = _timed(lambda: _ask(server.url, timeout=5))
    assert isinstance(error, BadReply), repr(error)
    assert str(error).startswith(f"{server.url}/chat/completions did not give a usable HTTP reply")
    assert "Check that base_url points at the OpenAI-compatible server" in str(error)
    assert __import__("re").search(match, str(error)), str(error)
    assert elapsed < 3


def test_a_chunked_reply_is_read():
    body = json.dumps(completion("A tram passes.\n\nThe audio shows rain.")).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    with ScriptedServer(_sends(CHUNKED + chunks + b"0\r\n\r\n")) as server:
        assert _ask(server.url).caption == "A tram passes.\n\nThe audio shows rain."


@pytest.mark.parametrize("content, match", [
    ([{"type": "text", "text": None}], "part 1 of the reply's message has text that is null, not a string"),
    ([{"type": "text", "text": "A"}, {"type": "text", "text": 42}], "part 2 .* text that is a number, not a string"),
    ([7], "part 1 of the reply's message is a number, not a text part"),
    ({"text": "A tram."}, "content is an object, not text"),
    (3.5, "content is a number, not text"),
])
def test_message_parts_that_are_not_text(content, match):
    with ScriptedServer(_sends(http_reply(200, completion(content)))) as server:
        with pytest.raises(BadReply, match=match + ".*not speaking the OpenAI chat format"):
            _ask(server.url)


def test_text_parts_are_joined_and_other_parts_skipped():
    content = [{"type": "text", "text": "A tram passes. "}, {"type": "image_url", "image_url": {"url": "x"}},
               "The audio shows rain."]
    with ScriptedServer(_sends(http_reply(200, completion(content)))) as server:
        assert _ask(server.url).caption == "A tram passes. The audio shows rain."


def test_deeply_nested_json_is_not_a_crash():
    with ScriptedServer(_sends(http_reply(200, "[" * 100000 + "]" * 100000))) as server:
        with pytest.raises(BadReply, match="not JSON"):
            _ask(server.url)


@pytest.mark.parametrize("url, match", [
    ("http://local host:11434/v1", "holds a space \\(U\\+0020\\) at character 13: remove it"),
    ("http://localhost:11434/v1\tx", "holds a tab \\(U\\+0009\\) at character 26"),
    ("http://localhost:11434/v1\nHost: evil", "holds a line break \\(U\\+000A\\) at character 26"),
    ("http://localhost:11434/\x00v1", "an invisible control character \\(U\\+0000\\) at character 24"),
    ("http://localhost\u200b:11434/v1", "an invisible control character \\(U\\+200B\\) at character 17"),
    ("http://localhost:11a34/v1", "the port '11a34' is not a number from 1 to 65535"),
    ("http://localhost:99999/v1", "the port '99999' is not a number from 1 to 65535"),
    ("http://localhost:0/v1", "port 0 is not a port a server listens on"),
    ("http://localhost:/v1", None),  # an empty port is the scheme's default
    ("http://[::1/v1", "is not a valid address \\(Invalid IPv6 URL\\)"),
    ("http://[fe80::zz]:8080/v1", "'fe80::zz' (is not a valid IPv6|does not appear to be an IPv4 or IPv6) address"),
    ("http://127.1:11434/v1", "'127.1' is not a standard IP address"),
    ("http://0x7f000001/v1", "'0x7f000001' is not a standard IP address"),
    ("http://2130706433:11434/v1", "'2130706433' is not a standard IP address"),
    ("http://loc%61lhost/v1", "holds characters a host name cannot have"),
    ("http://localhost:11434/v1?key=1", "has a query or fragment"),
    ("http://localhost:11434/v1#top", "has a query or fragment"),
    ("http:/localhost/v1", "is not an http:// or https:// address"),
    ("ftp://localhost/v1", "is not an http:// or https:// address"),
    ("file:///etc/passwd", "is not an http:// or https:// address"),
    ("localhost:11434/v1", "is not an http:// or https:// address"),
    ("", "base_url is empty"),
    ("http:///v1", "has no host name"),
])
def test_bad_urls_are_refused_before_any_connection(url, match):
    if match is None:
        assert normalise_base_url(url) == "http://localhost/v1"
        return
    with pytest.raises(EnhanceError, match=match):
        normalise_base_url(url)
    with pytest.raises(EnhanceError, match=match):
        _ask(url)


def test_url_forms_that_are_accepted():
    assert normalise_base_url(" HTTP://LocalHost:11434/v1/ ") == "http://localhost:11434/v1"
    assert normalise_base_url("https://api.example.com/v1/chat/completions") == "https://api.example.com/v1"
    assert normalise_base_url("https://api.example.com:443/v1") == "https://api.example.com/v1"
    assert normalise_base_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"
    assert normalise_base_url("https://exämple.com/v1") == "https://xn--exmple-cua.com/v1"
    assert normalise_base_url("http://localhost.:1234/v1") == "http://localhost:1234/v1"


def test_a_non_ascii_path_is_sent_percent_encoded():
    with FakeLLMServer() as server:
        server.respond = lambda request: (200, completion("A tram.\n\nThe audio shows rain."))
        _ask(server.url.replace("/v1", "/vé1"))
        assert server.requests[0]["path"] == "/v%C3%A91/chat/completions"


def test_nothing_listening_names_the_url_and_how_to_start():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerUnreachable) as err:
        _ask(f"http://127.0.0.1:{port}/v1")
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/v1" in message and "connection was refused" in message
    assert "ollama serve" in message and "LM Studio" in message


def test_redirects_are_not_followed():
    """A redirect to another server: refused (the key and the data never follow it), that server untouched."""
    with FakeLLMServer() as other:
        def redirect(conn, request):
            conn.sendall(http_reply(307, "", {"Location": other.url + "/chat/completions"}))
        with ScriptedServer(redirect) as server:
            with pytest.raises(ServerUnreachable, match=f"redirects \\(HTTP 307\\) to {other.url}/chat/completions: "
                               "set base_url to the address the server answers on \\(redirects are not followed"):
                _ask(server.url)
        assert other.requests == []


@pytest.mark.parametrize("status", [200, 500])
def test_a_huge_hostile_body_is_handled_quickly(status):
    """12 MB of words the error patterns look for (or of unclosed reasoning tags in a 200): handled in seconds,
    not minutes after the timeout."""
    if status == 200:
        body = http_reply(200, completion("<think>" * 1_500_000 + "</think>"))
    else:
        body = http_reply(500, "image model not " * 750_000)
    with ScriptedServer(_sends(body)) as server:
        start = time.monotonic()
        with pytest.raises(EnhanceError) as err:
            enhance_prompt(IDEA, "data:image/png;base64,iVBORw0KGgo=", EnhanceSettings(server.url, VISION_MODEL,
                           timeout=30), environ={})
        assert time.monotonic() - start < 5
    assert ("the reply is 10500008 characters long, more than 2048 tokens (max_tokens) can hold" if status == 200
            else "HTTP 500") in str(err.value)


def test_https_to_a_plain_http_server_names_the_scheme():
    with FakeLLMServer() as server:
        with pytest.raises(ServerUnreachable, match="TLS failed talking to https://127.0.0.1:.*Check that base_url's "
                           "scheme \\(http or https\\) matches the server"):
            _ask(server.url.replace("http://", "https://"))
        assert server.requests == []


def test_a_certificate_that_does_not_verify_is_refused(tmp_path):
    """A real TLS server on 127.0.0.1 with a self-signed certificate (openssl): refused, nothing sent over it."""
    import shutil
    import ssl
    import subprocess
    import threading
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test certificate)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")], check=True,
                   capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).recv(1)
        except (ssl.SSLError, OSError):
            pass
    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(ServerUnreachable, match="the server's TLS certificate is not valid for this host "
                           "\\(self.signed certificate\\)"):
            _ask(f"https://localhost:{port}/v1")
    finally:
        listener.close()
