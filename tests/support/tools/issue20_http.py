"""Issue 20's cases of classes 1-3 (secrets, deadlines, the HTTP layer and URLs) for issue20_cases.py: MOVA Prompt
Enhance's enhance_prompt (what the node's execute calls) against real HTTP servers on 127.0.0.1 that misbehave on
purpose (fake_llm_server.py), with the environment passed in as the node would read it."""

from __future__ import annotations

import contextlib
import os
import socket
import time

from comfyui_mova.nodes.prompts.enhance import EnhanceSettings, enhance_prompt
from comfyui_mova.nodes.prompts.llm_access import HOSTS_VAR, KEY_VAR
from comfyui_mova.nodes.prompts.llm_client import endpoint
from fake_llm_server import (VISION_MODEL, FakeLLMServer, RecordingEnviron, ScriptedServer, completion, drip_headers,
                             http_reply, trickle_all, trickle_body, wait_for_hangup)
from issue20_cases import HEX40_KEY, HEX_KEY, KEY, OTHER_KEY, URL_PASSWORD, Case, Result, attempt

IDEA = "A tram passes in the rain."
GOOD = http_reply(200, completion("A tram passes in the rain.\n\nThe audio shows steady rain."))
SLACK = 1.0  # seconds a deadline may overrun on a busy 2-core machine


def settings(url: str, **changes) -> EnhanceSettings:
    return EnhanceSettings(**(dict(base_url=url, model=VISION_MODEL, timeout=5) | changes))


def approved(**more) -> dict:
    """The user's own settings: this machine's loopback listed, the key in MOVA_LLM_API_KEY."""
    return {HOSTS_VAR: "127.0.0.1", KEY_VAR: KEY} | more


def ask(url: str, environ=None, expect_error: str = "refused", should_stop=None, **changes) -> tuple[Result, object]:
    return attempt(lambda: enhance_prompt(IDEA, None, settings(url, **changes), {} if environ is None else environ,
                                          should_stop=should_stop), expect_error)


def sends(data: bytes, linger: float = 0.2):
    def script(conn, request):
        conn.sendall(data)
        time.sleep(linger)
    return script


@contextlib.contextmanager
def proxy_env(**values):
    names = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    os.environ.update(values)
    try:
        yield
    finally:
        for n in names:
            os.environ.pop(n, None)
        os.environ.update(saved)


# -- 1. secrets ----------------------------------------------------------------------------------------------------

def named_variable(name: str, value: str):
    def run(lab) -> Result:
        environ = RecordingEnviron({name: value, KEY_VAR: KEY})
        with FakeLLMServer() as server:
            result, _ = ask(server.url, environ, api_key_env=name)
            result.check(server.requests == [], "the workflow's server got a request")
        return result.check(environ.read <= {HOSTS_VAR, KEY_VAR}, f"read {sorted(environ.read)}")
    return run


def unlisted_host(url: str):
    def run(lab) -> Result:
        result, _ = attempt(lambda: endpoint(url, "", {KEY_VAR: KEY}))
        return result
    return run


def bad_key_value(value: str):
    def run(lab) -> Result:
        with FakeLLMServer() as server:
            result, _ = ask(server.url, {HOSTS_VAR: "127.0.0.1", KEY_VAR: value})
            return result.check(server.requests == [], "a request was sent")
    return run


def pasted_key(value: str):
    def run(lab) -> Result:
        return ask("http://localhost:11434/v1", {}, api_key_env=value)[0]
    return run


def hostile(respond):
    """The listed loopback server gets the key and answers with ``respond(request)`` (status, body)."""
    def run(lab) -> Result:
        with FakeLLMServer() as server:
            server.respond = respond
            result, _ = ask(server.url, approved(), "stopped")
            sent = [r["headers"].get("authorization") for r in server.chat_requests()]
            return result.check(sent == [f"Bearer {KEY}"], f"the key was not sent once as it should be: {len(sent)}")
    return run


def hostile_raw(script):
    def run(lab) -> Result:
        with ScriptedServer(lambda conn, r: (script(conn, r), time.sleep(0.2))) as server:
            result, _ = ask(server.url, approved(), "stopped")
        return result
    return run


def echoed_into_caption(lab) -> Result:
    with FakeLLMServer() as server:
        server.respond = lambda r: (200, completion(f"A tram passes; its sign reads {r['headers']['authorization']}."
                                                    f"\n\nThe audio shows rain and {KEY[4:20]}."))
        result, enhanced = ask(server.url, approved())
    if enhanced is not None:
        result.message = f"caption: {enhanced.caption!r}; warning: {' '.join(enhanced.warnings)}"
        result.check("***" in enhanced.caption, "the caption was not blanked")
    return result


def unlisted_loopback_gets_no_key(lab) -> Result:
    environ = RecordingEnviron({KEY_VAR: KEY})
    with FakeLLMServer() as server:
        result, enhanced = ask(server.url, environ)
        sent = server.requests[0]["headers"] if server.requests else {}
    result.message = (f"caption taken; the request carried no Authorization header; {KEY_VAR} was not read"
                      if "authorization" not in sent and KEY_VAR not in environ.read else "")
    return result.check(bool(result.message), f"headers {sorted(sent)}, read {sorted(environ.read)}")


def password_in_url(url: str):
    def run(lab) -> Result:
        return attempt(lambda: endpoint(url, "", {}))[0]
    return run


def key_in_host_list(hosts: str):
    def run(lab) -> Result:
        return attempt(lambda: endpoint("http://localhost:11434/v1", "", {HOSTS_VAR: hosts, KEY_VAR: KEY}))[0]
    return run


def plain_http_to_listed_host(lab) -> Result:
    return attempt(lambda: endpoint("http://llm.lan:8000/v1", "", {HOSTS_VAR: "llm.lan:8000", KEY_VAR: KEY}))[0]


def key_only_inside_the_tunnel(lab) -> Result:
    with ScriptedServer(sends(http_reply(403, "no"))) as proxy, proxy_env(https_proxy=f"http://127.0.0.1:{proxy.port}"):
        result, _ = ask("https://llm.test/v1", {HOSTS_VAR: "llm.test", KEY_VAR: KEY}, "stopped")
        seen = str(proxy.requests)
        method = proxy.requests[0]["method"] if proxy.requests else None
    result.check(method == "CONNECT", f"the proxy saw {method}")
    return result.check(not any(p in seen for p in (KEY[:8], KEY[-8:])), "the proxy saw the key")


# -- 2. deadlines --------------------------------------------------------------------------------------------------

trickle_body_per_second = trickle_body(GOOD, 1.0)
trickle_all_slowly = trickle_all(GOOD, 0.3)
header_every_2s = drip_headers(2.0, 60)


def silent(conn, request):
    wait_for_hangup(conn, 30)


def deadline(script, timeout: float):
    def run(lab) -> Result:
        with ScriptedServer(script) as server:
            result, _ = ask(server.url, {}, "stopped", timeout=timeout)
            end = time.monotonic() + 3
            while not server.hangups and time.monotonic() < end:
                time.sleep(0.02)
        result.check(result.seconds is not None and result.seconds < timeout + SLACK,
                     f"took {result.seconds:.1f} s for timeout {timeout}")
        return result.check(bool(server.hangups) and server.hangups[0] is not None, "the connection was left open")
    return run


def cancel_after(script, after: float):
    def run(lab) -> Result:
        with ScriptedServer(script) as server:
            start = time.monotonic()
            result, _ = ask(server.url, {}, "stopped", timeout=120,
                            should_stop=lambda: time.monotonic() - start > after)
        result.check(result.seconds is not None and result.seconds < after + 1.0,
                     f"Cancel took {result.seconds - after:.2f} s")
        result.message += f" (Cancel pressed {after} s in)"
        return result
    return run


def one_budget_for_retries(lab) -> Result:
    def script(conn, request):
        time.sleep(0.7)
        if b'"max_tokens"' in request["body"]:
            conn.sendall(http_reply(400, {"error": {"message": "Use 'max_completion_tokens' instead."}}))
        else:
            conn.sendall(GOOD)
    with ScriptedServer(script) as server:
        result, _ = ask(server.url, {}, "stopped", timeout=1)
        requests = len(server.requests)
    result.check(requests == 2, f"{requests} requests")
    return result.check(result.seconds < 1 + SLACK, f"took {result.seconds:.1f} s")


def slow_but_steady(lab) -> Result:
    with ScriptedServer(lambda conn, r: (time.sleep(0.5), conn.sendall(GOOD))) as server:
        result, enhanced = ask(server.url, {}, timeout=3)
    if enhanced is not None:
        result.message = f"caption taken: {enhanced.caption!r}"
    return result


# -- 3. the HTTP layer and URLs ------------------------------------------------------------------------------------

CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def replies(data: bytes):
    def run(lab) -> Result:
        with ScriptedServer(sends(data)) as server:
            result, _ = ask(server.url, {}, "stopped")
        return result.check(result.seconds < 3, f"took {result.seconds:.1f} s")
    return run


def message_content(content):
    return replies(http_reply(200, completion(content)))


def bad_url(url: str):
    def run(lab) -> Result:
        return ask(url, {})[0]
    return run


def non_ascii_path(lab) -> Result:
    with FakeLLMServer() as server:
        server.respond = lambda request: (200, completion("A tram.\n\nThe audio shows rain."))
        result, _ = ask(server.url.replace("/v1", "/vé1"), {})
        path = server.requests[0]["path"] if server.requests else None
    result.message = f"sent as {path}"
    return result.check(path == "/v%C3%A91/chat/completions", f"path {path}")


def nothing_listening(lab) -> Result:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ask(f"http://127.0.0.1:{port}/v1", {}, "stopped")[0]


def redirect_elsewhere(lab) -> Result:
    with FakeLLMServer() as other:
        def redirect(conn, request):
            conn.sendall(http_reply(307, "", {"Location": other.url + "/chat/completions"}))
        with ScriptedServer(redirect) as server:
            result, _ = ask(server.url, {}, "stopped")
        return result.check(other.requests == [], "the redirect was followed")


def https_to_plain_server(lab) -> Result:
    with FakeLLMServer() as server:
        result, _ = ask(server.url.replace("http://", "https://"), {}, "stopped")
        return result.check(server.requests == [], "a request reached the server")


def cases() -> list[Case]:
    out = []
    add = lambda cls, key, text, expect, run, **kw: out.append(Case(cls, key, text, expect, run, **kw))  # noqa: E731
    # 1. secrets
    add(1, "env-aws", "api_key_env=AWS_SECRET_ACCESS_KEY, base_url = the workflow's own server on 127.0.0.1",
        "refused", named_variable("AWS_SECRET_ACCESS_KEY", OTHER_KEY), cheap=True)
    add(1, "env-home", "api_key_env=HOME, base_url = the workflow's own server", "refused",
        named_variable("HOME", "/home/me"), cheap=True)
    add(1, "host-unlisted", "base_url https://collector.example/v1, MOVA_LLM_API_KEY=<key>", "refused",
        unlisted_host("https://collector.example/v1"), cheap=True)
    add(1, "host-nip", "base_url http://127.0.0.1.nip.io/v1 (a name that looks local)", "refused",
        unlisted_host("http://127.0.0.1.nip.io/v1"), cheap=True)
    add(1, "host-lan", "base_url http://10.0.0.2:11434/v1 (a LAN address, not listed)", "refused",
        unlisted_host("http://10.0.0.2:11434/v1"), cheap=True)
    add(1, "key-linebreak", "MOVA_LLM_API_KEY holds a line break inside <key>", "refused",
        bad_key_value(KEY[:17] + "\n" + KEY[17:]), cheap=True)
    add(1, "key-header-injection", "MOVA_LLM_API_KEY = <key> + '\\r\\nX-Evil: 1'", "refused",
        bad_key_value(KEY + "\r\nX-Evil: 1"), cheap=True)
    add(1, "key-typographic-quotes", "MOVA_LLM_API_KEY = “<key>” (typographic quotes)", "refused",
        bad_key_value(f"“{KEY}”"), cheap=True)
    add(1, "key-nbsp", "MOVA_LLM_API_KEY with a non-breaking space inside", "refused",
        bad_key_value(KEY[:20] + "\u00a0" + KEY[20:]), cheap=True)
    add(1, "pasted-sk", "api_key_env = <key> (sk-… key pasted where a name belongs)", "refused", pasted_key(KEY),
        cheap=True)
    add(1, "pasted-hex32", "api_key_env = <key> (32 lower-case hex digits)", "refused", pasted_key(HEX_KEY),
        cheap=True)
    add(1, "pasted-hex40", "api_key_env = <key> (40 lower-case hex digits)", "refused", pasted_key(HEX40_KEY),
        cheap=True)
    add(1, "host-list-key", "MOVA_LLM_HOSTS=api.openai.com=<key> (key where the variable's name goes)", "refused",
        key_in_host_list(f"api.openai.com={HEX_KEY}"), cheap=True)
    add(1, "url-password", "base_url https://me:<key>@api.example.com/v1", "refused",
        password_in_url(f"https://me:{URL_PASSWORD}@api.example.com/v1"), cheap=True)
    add(1, "plain-http-key", "MOVA_LLM_HOSTS=llm.lan:8000 (no http://), base_url http://llm.lan:8000/v1, a key set",
        "refused", plain_http_to_listed_host, cheap=True)
    add(1, "unlisted-loopback", "unlisted server on 127.0.0.1, MOVA_LLM_API_KEY=<key>", "handled",
        unlisted_loopback_gets_no_key, cheap=True)
    add(1, "echo-401", "listed server answers 401 'Incorrect API key provided: <key>'", "stopped",
        hostile(lambda r: (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})), cheap=True)
    add(1, "echo-500-split", "listed server answers 500 with the key split by a line break", "stopped",
        hostile(lambda r: (500, f"trace: key={KEY[:15]}\n{KEY[15:]} failed")), cheap=True)
    add(1, "echo-400-quotes", "listed server answers 400 'key “<key>” rejected'", "stopped",
        hostile(lambda r: (400, {"error": {"message": f"key “{KEY}” rejected"}})), cheap=True)
    add(1, "echo-model-list", "listed server: model unknown, /v1/models lists <key> as a model", "stopped",
        hostile(lambda r: (404, {"error": {"message": "model 'x' not found"}}) if r["path"].endswith("/completions")
                else (200, {"data": [{"id": KEY}, {"id": "llama3"}]})), cheap=True)
    add(1, "redirect-location", "listed server answers 302 Location: https://collector.example/k?key=<key>",
        "stopped", hostile_raw(lambda conn, r: conn.sendall(
            http_reply(302, "", {"Location": f"https://collector.example/k?key={KEY}"}))), cheap=True)
    add(1, "non-http-echo", "listed server answers 'HELLO Bearer <key>' (not HTTP)", "stopped",
        hostile_raw(lambda conn, r: conn.sendall(f"HELLO {r['headers']['authorization']}\r\n\r\n".encode())),
        cheap=True)
    add(1, "short-body-echo", "listed server: 200, Content-Length 900, body '<key>' then closes", "stopped",
        hostile_raw(lambda conn, r: conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{KEY}".encode())),
        cheap=True)
    add(1, "caption-echo", "listed server's caption repeats the Authorization header and 16 characters of the key",
        "handled", echoed_into_caption, cheap=True)
    add(1, "proxy-tunnel", "https_proxy on 127.0.0.1 refusing CONNECT; listed https host, key set", "stopped",
        key_only_inside_the_tunnel, cheap=True)
    # 2. deadlines
    add(2, "trickle-1byte-s", "server sends headers, then the body a byte a second; timeout 5 (was held 91 s)",
        "stopped", deadline(trickle_body_per_second, 5), timed=True)
    add(2, "header-every-2s", "server sends a header line every 2 s; timeout 5 (was held 80 s)", "stopped",
        deadline(header_every_2s, 5), timed=True)
    add(2, "trickle-all", "server sends its whole reply a byte every 0.3 s; timeout 2", "stopped",
        deadline(trickle_all_slowly, 2), timed=True)
    add(2, "silent", "server accepts and never answers; timeout 1", "stopped", deadline(silent, 1), timed=True)
    add(2, "retry-budget", "server answers each request after 0.7 s, asks for a retry; timeout 1", "stopped",
        one_budget_for_retries, timed=True)
    add(2, "cancel-silent", "Cancel 0.5 s into a request to a silent server (timeout 120)", "stopped",
        cancel_after(silent, 0.5), timed=True)
    add(2, "cancel-trickle", "Cancel 0.5 s into a body trickled a byte a second (timeout 120)", "stopped",
        cancel_after(trickle_body_per_second, 0.5), timed=True)
    add(2, "slow-steady", "server answers whole after 0.5 s; timeout 3", "handled", slow_but_steady, timed=True)
    # 3. the HTTP layer and URLs
    for key, text, data in [
        ("ssh-banner", "server answers 'SSH-2.0-OpenSSH_9.6' (not HTTP)", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("no-reply", "server closes without a byte", b""),
        ("empty-status", "server answers an empty status line", b"\r\n\r\n"),
        ("http2", "server answers 'HTTP/2.0 200 OK'", b"HTTP/2.0 200 OK\r\n\r\n"),
        ("bad-status", "server answers 'HTTP/1.1 2x0 OK'", b"HTTP/1.1 2x0 OK\r\n\r\n"),
        ("long-header", "a 70 000-byte header line", b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"),
        ("many-headers", "120 header lines", b"HTTP/1.1 200 OK\r\n" + b"X-Many: y\r\n" * 120 + b"\r\n"),
        ("chunk-size", "chunked reply with chunk size 'zz'", CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n"),
        ("chunk-cut", "chunked reply cut inside a chunk", CHUNKED + b"40\r\n{\"choices\""),
        ("short-body", "Content-Length 500, 14 bytes sent", b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"
                                                            b"{\"choices\": []"),
        ("huge-length", "Content-Length 16 MiB + 1", b"HTTP/1.1 200 OK\r\nContent-Length: 16777217\r\n\r\n"),
        ("nested-json", "200 with JSON nested 100 000 deep", http_reply(200, "[" * 100000 + "]" * 100000)),
    ]:
        add(3, key, text, "stopped", replies(data), cheap=True)
    for key, text, content in [
        ("part-null", "message part whose text is null", [{"type": "text", "text": None}]),
        ("part-number", "message part whose text is a number", [{"type": "text", "text": "A"},
                                                                 {"type": "text", "text": 42}]),
        ("content-number", "message content is the number 3.5", 3.5),
    ]:
        add(3, key, text, "stopped", message_content(content), cheap=True)
    for key, url in [
        ("url-space", "http://local host:11434/v1"), ("url-tab", "http://localhost:11434/v1\tx"),
        ("url-newline", "http://localhost:11434/v1\nHost: evil"), ("url-nul", "http://localhost:11434/\x00v1"),
        ("url-zero-width", "http://localhost\u200b:11434/v1"), ("url-port-text", "http://localhost:11a34/v1"),
        ("url-port-big", "http://localhost:99999/v1"), ("url-port-0", "http://localhost:0/v1"),
        ("url-ipv6-open", "http://[::1/v1"), ("url-odd-ip", "http://0x7f000001/v1"),
        ("url-query", "http://localhost:11434/v1?key=1"), ("url-ftp", "ftp://localhost/v1"),
        ("url-file", "file:///etc/passwd"), ("url-no-scheme", "localhost:11434/v1"), ("url-empty", ""),
        ("url-no-host", "http:///v1"),
    ]:
        add(3, key, f"base_url {url!r}", "refused", bad_url(url), cheap=True)
    add(3, "url-non-ascii-path", "base_url with a non-ASCII path (…/vé1)", "handled", non_ascii_path, cheap=True)
    add(3, "refused-connection", "nothing listens on the port", "stopped", nothing_listening, cheap=True)
    add(3, "redirect-307", "server redirects (307) to another server", "stopped", redirect_elsewhere, cheap=True)
    add(3, "https-to-http", "https:// base_url for a plain-HTTP server", "stopped", https_to_plain_server, cheap=True)
    return out
