"""A shared workflow cannot make MOVA Prompt Enhance read a secret or send it (or the user's idea and picture)
anywhere the user did not approve outside the workflow: requests go to this machine's loopback or to hosts in
MOVA_LLM_HOSTS, the key comes from MOVA_LLM_API_KEY (or the variable MOVA_LLM_HOSTS names for a host) and goes only
to listed hosts, and no message, log line, caption or warning holds the key or a recognisable part of it. Real
HTTP servers on 127.0.0.1 (tests/support/fake_llm_server.py) play the servers, honest and hostile."""

import logging
import time

import pytest

from comfyui_mova.nodes.prompts.llm_access import (HOSTS_VAR, KEY_VAR, access_for, blank_key, is_loopback_target,
                                           is_plain_name, parse_base_url)
from comfyui_mova.nodes.prompts.llm_client import AuthError, EnhanceError, ServerUnreachable, UnknownModel, endpoint
from comfyui_mova.nodes.prompts.enhance import EnhanceSettings, enhance_prompt
from fake_llm_server import VISION_MODEL, FakeLLMServer, RecordingEnviron, ScriptedServer, completion, http_reply

KEY = "sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5"
OTHER_KEY = "sk-other-Pp4Qq5Rr6Ss7Tt8Uu9Vv0Ww"
IDEA = "A tram passes in the rain."


def pieces(secret: str) -> set[str]:
    """Every 8 characters in a row of ``secret``: a message holding one of them holds a recognisable part."""
    return {secret[i:i + 8] for i in range(len(secret) - 7)}


def assert_no_part_of(secret: str, *texts: str) -> None:
    for text in texts:
        assert not any(p in text for p in pieces(secret)), text


@pytest.fixture(scope="module")
def running_server():
    with FakeLLMServer() as s:
        yield s


@pytest.fixture()
def server(running_server):
    running_server.reset()
    return running_server


def _settings(url, **changes) -> EnhanceSettings:
    return EnhanceSettings(**(dict(base_url=url, model=VISION_MODEL, timeout=5) | changes))


def _approved(**more) -> RecordingEnviron:
    return RecordingEnviron({HOSTS_VAR: "127.0.0.1", KEY_VAR: KEY} | more)


# -- what a workflow can make the pack read or send ----------------------------------------------------------------

def test_a_variable_the_workflow_names_is_never_read(server):
    environ = RecordingEnviron({"AWS_SECRET_ACCESS_KEY": OTHER_KEY, "HOME": "/home/me", KEY_VAR: KEY})
    for name in ("AWS_SECRET_ACCESS_KEY", "HOME"):
        with pytest.raises(AuthError) as err:
            enhance_prompt(IDEA, None, _settings(server.url, api_key_env=name), environ)
        message = str(err.value)
        assert f"api_key_env names {name}, but MOVA Prompt Enhance no longer reads a variable a workflow names" \
            in message and "clear api_key_env" in message and "docs/prompting.md" in message
    assert environ.read <= {HOSTS_VAR, KEY_VAR} and server.requests == []


@pytest.mark.parametrize("url", [
    "https://collector.example/v1", "http://203.0.113.7:11434/v1", "http://localhost.collector.example:11434/v1",
    "http://127.0.0.1.nip.io/v1", "http://0.0.0.0:11434/v1", "http://[::]:11434/v1", "http://my-desktop:11434/v1",
    "http://[fe80::1]:11434/v1", "http://10.0.0.2:11434/v1",
])
def test_a_host_the_user_did_not_list_gets_nothing(url):
    """Not this machine's loopback and not in MOVA_LLM_HOSTS: refused before any look-up or connection, key or no
    key (the idea and the first frame are the user's data too)."""
    for environ in ({}, {KEY_VAR: KEY}, {HOSTS_VAR: "api.openai.com", KEY_VAR: KEY}):
        with pytest.raises(EnhanceError, match=f"is not on this machine and not in your {HOSTS_VAR} list, so MOVA "
                           "Prompt Enhance sends nothing there.*set MOVA_LLM_HOSTS="):
            endpoint(url, "", environ)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v1", "http://127.8.9.10:1/v1", "http://[::1]:1/v1",
                                 "http://[::ffff:127.0.0.1]:1/v1", "http://localhost:1/v1", "http://LOCALHOST.:1/v1"])
def test_loopback_forms_are_this_machine(url):
    assert is_loopback_target(parse_base_url(url))
    access = access_for(url, "", {KEY_VAR: KEY})
    assert access.route.loopback_only and access.key is None and not access.listed


def test_an_unlisted_loopback_server_gets_no_key(server):
    environ = RecordingEnviron({KEY_VAR: KEY})
    enhance_prompt(IDEA, None, _settings(server.url), environ)
    assert "authorization" not in server.requests[0]["headers"]
    assert KEY_VAR not in environ.read  # not even read: nothing may carry it there
    server.required_key = KEY
    port = server.url.split(":")[2].split("/")[0]
    with pytest.raises(AuthError, match=f"HTTP 401 .*a host on this machine gets none unless you list it: set "
                       f"{HOSTS_VAR}=127.0.0.1:{port} and {KEY_VAR}=<the key>"):
        enhance_prompt(IDEA, None, _settings(server.url), environ)


def test_a_listed_host_gets_the_key_in_the_header_only(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.required_key = KEY
    settings = _settings(server.url)
    result = enhance_prompt(IDEA, None, settings, _approved())
    (request,) = server.chat_requests()
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert_no_part_of(KEY, str(request["body"]), result.caption, *result.warnings, caplog.text, repr(settings))
    point = endpoint(server.url, "", _approved())
    assert_no_part_of(KEY, repr(point), repr(point.access), str(point.access.__dict__.get("route")))


def test_the_widget_may_name_only_the_variable_the_user_set_up(server):
    """api_key_env stays in its place for old workflows: empty or the variable the user's settings give the host
    (accepted), anything else refused with the setup to make."""
    server.required_key = KEY
    enhance_prompt(IDEA, None, _settings(server.url, api_key_env=KEY_VAR), _approved())
    own = _approved(**{HOSTS_VAR: "127.0.0.1=OPENAI_API_KEY", "OPENAI_API_KEY": KEY, KEY_VAR: OTHER_KEY})
    enhance_prompt(IDEA, None, _settings(server.url, api_key_env="OPENAI_API_KEY"), own)
    enhance_prompt(IDEA, None, _settings(server.url), own)
    assert [r["headers"]["authorization"] for r in server.chat_requests()] == [f"Bearer {KEY}"] * 3
    with pytest.raises(AuthError, match=f"api_key_env names {KEY_VAR}.*your {HOSTS_VAR} gives 127.0.0.1:.* the key "
                       "in OPENAI_API_KEY: clear api_key_env"):
        enhance_prompt(IDEA, None, _settings(server.url, api_key_env=KEY_VAR), own)
    assert "OPENAI_API_KEY" in own.read and own.read <= {HOSTS_VAR, KEY_VAR, "OPENAI_API_KEY"}


def test_an_old_shared_workflow_fails_safe_and_says_how_to_set_up():
    """A pre-0.x workflow: a hosted API, its key named in api_key_env. Without the user's settings nothing is sent;
    each step of the setup the messages ask for is accepted."""
    url, name = "https://api.openai.com/v1", "OPENAI_API_KEY"
    with pytest.raises(EnhanceError, match=f"set {HOSTS_VAR}=api.openai.com \\(and {KEY_VAR}=<your key> if it needs "
                       "one\\)"):
        endpoint(url, name, {name: KEY})
    with pytest.raises(AuthError, match=f"to use {name} for this host, write {HOSTS_VAR}=api.openai.com={name}"):
        endpoint(url, name, {HOSTS_VAR: "api.openai.com", KEY_VAR: OTHER_KEY, name: KEY})
    point = endpoint(url, name, {HOSTS_VAR: "api.openai.com=OPENAI_API_KEY", name: KEY})
    assert point.api_key == KEY and point.key_env == name and point.access.listed
    point = endpoint(url, "", {HOSTS_VAR: "https://api.openai.com", KEY_VAR: KEY})
    assert point.api_key == KEY and point.key_env == KEY_VAR


def test_host_entries_with_a_port_a_scheme_or_no_key(server):
    port = int(server.url.split(":")[2].split("/")[0])
    for hosts in (f"127.0.0.1:{port + 1}", f"http://127.0.0.1:{port + 1}", "127.0.0.1=", "localhost"):
        server.reset()
        enhance_prompt(IDEA, None, _settings(server.url), _approved(**{HOSTS_VAR: hosts}))
        assert "authorization" not in server.requests[0]["headers"], hosts
    for hosts in (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", f"localhost:1, 127.0.0.1:{port}"):
        server.reset()
        enhance_prompt(IDEA, None, _settings(server.url), _approved(**{HOSTS_VAR: hosts}))
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}", hosts


def test_a_variable_named_in_the_host_list_must_hold_the_key(server):
    for value, state in ((None, "is not set"), ("  ", "is empty")):
        environ = {HOSTS_VAR: "127.0.0.1=MY_LLM_KEY"} | ({"MY_LLM_KEY": value} if value is not None else {})
        with pytest.raises(AuthError, match=f"{HOSTS_VAR} gives 127.0.0.1:.* the key in MY_LLM_KEY, which {state}: "
                           "set it before starting ComfyUI"):
            enhance_prompt(IDEA, None, _settings(server.url), environ)
    assert server.requests == []


def test_the_key_never_crosses_the_network_in_plain_http():
    environ = {HOSTS_VAR: "llm.lan:8000", KEY_VAR: KEY}
    with pytest.raises(AuthError, match="refusing to send the API key from MOVA_LLM_API_KEY over plain http to "
                       "llm.lan:8000: use the server's https:// address") as err:
        endpoint("http://llm.lan:8000/v1", "", environ)
    assert_no_part_of(KEY, str(err.value))
    assert endpoint("http://llm.lan:8000/v1", "", {HOSTS_VAR: "http://llm.lan:8000", KEY_VAR: KEY}).api_key == KEY
    assert endpoint("http://llm.lan:8000/v1", "", {HOSTS_VAR: "llm.lan:8000=", KEY_VAR: KEY}).api_key is None
    assert endpoint("https://llm.lan:8000/v1", "", environ).api_key == KEY


# -- keys pasted where a name belongs, keys that cannot be sent ------------------------------------------------------

PASTED = [
    KEY, "sk-proj-AbCdEf0123456789GhIjKlMnOpQrStUv", "3f9a1c0e7b2d4f6a8c0e2b4d6f8a0c2e",
    "3f9a1c0e7b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a", "AKIAIOSFODNN7EXAMPLE", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AIzaSyD4x9Qw2Er5Ty7Ui8Op0As1Df3Gh6Jk",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "xoxb-1234567890-abcdefghijklmnop",
    "123e4567-e89b-12d3-a456-426614174000", "dGhpcyBpcyBhIHNlY3JldCBrZXk=", "sk-abc\nsk-def123456789",
    "abcdef0123456789abcdef0123456789abcdef01",
]


@pytest.mark.parametrize("pasted", PASTED)
def test_a_key_pasted_into_api_key_env_is_refused_without_echo(pasted, caplog):
    """Checked first, whatever else is wrong, and never repeated (not even in part)."""
    caplog.set_level(logging.DEBUG)
    for url in ("http://localhost:11434/v1", "https://collector.example/v1", "not a url"):
        with pytest.raises(AuthError) as err:
            enhance_prompt(IDEA, None, _settings(url, api_key_env=pasted), {})
        message = str(err.value)
        assert "api_key_env holds text that is not shaped like an environment variable's name" in message
        assert "replace that key" in message and KEY_VAR in message
        assert_no_part_of(pasted, message, caplog.text)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MOVA_TEST_LLM_KEY", "HOME", "PATH",
                                  "GEMINI_API_KEY_2", "HUGGINGFACEHUB_API_TOKEN", "MOVA_LLM_API_KEY", "my_key"])
def test_variable_names_are_names(name):
    assert is_plain_name(name)


@pytest.mark.parametrize("value, problem", [
    ("sk-test-Zq8Xw2Lm4\nNp6Rt0Vb1Yc3Hd5", "holds a line break"),
    ("sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5\r\nX-Evil: 1", "holds a line break"),
    ("“sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5”", "holds a character that is not plain ASCII \\(typographic quotes"),
    ("sk-test-Zq8Xw2Lm4Np6\u00a0Rt0Vb1Yc3Hd5", "holds a character that is not plain ASCII"),
    ('"sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5"', "is wrapped in quotes"),
    ("Bearer sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5", "starts with 'Bearer '"),
    ("sk-test-Zq8Xw2Lm4 Np6Rt0Vb1Yc3Hd5", "holds a space or a control character"),
    ("sk-test-Zq8Xw2Lm4\x00Np6Rt0Vb1Yc3Hd5", "holds a space or a control character"),
])
def test_a_key_that_cannot_go_into_a_header_is_refused_without_echo(server, value, problem, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError, match=f"the API key in environment variable {KEY_VAR} {problem}") as err:
        enhance_prompt(IDEA, None, _settings(server.url), {HOSTS_VAR: "127.0.0.1", KEY_VAR: value})
    assert_no_part_of(KEY, str(err.value), caplog.text)
    assert server.requests == []


@pytest.mark.parametrize("hosts, match", [
    ("api.openai.com=sk-proj-AbCdEf0123456789GhIjKl", "after '=' comes the NAME of the environment variable"),
    ("api.openai.com=3f9a1c0e7b2d4f6a8c0e2b4d6f8a0c2e", "after '=' comes the NAME of the environment variable"),
    ("ftp://files.example", "only http:// or https:// addresses"),
    ("api.example.com/v1", "list only host\\[:port\\]"),
    ("me@api.example.com", "list only host\\[:port\\]"),
    ("api.example.com:https", "the port 'https' is not a number"),
    ("[::1", "is not a valid host \\(IPv6 addresses go in brackets"),
    ("bad_host!", "holds characters a host name cannot have"),
])
def test_mistakes_in_the_host_list_are_named(hosts, match):
    with pytest.raises(EnhanceError, match=f"{HOSTS_VAR} entry .*{match}") as err:
        endpoint("http://localhost:11434/v1", "", {HOSTS_VAR: hosts, KEY_VAR: KEY})
    assert_no_part_of(hosts.partition("=")[2] or "........", str(err.value))


def test_a_password_in_base_url_is_never_repeated():
    secret = "sk-live-Qq1Ww2Ee3Rr4Tt5Yy6Uu7"
    for url in (f"http://{secret}@127.0.0.1:11434/v1", f"https://me:{secret}@api.example.com/v1"):
        with pytest.raises(AuthError, match="base_url holds a user name or password") as err:
            endpoint(url, "", {})
        assert_no_part_of(secret, str(err.value))


# -- hostile servers: nothing they echo brings the key back ----------------------------------------------------------

HOSTILE = {
    "401 echoing the key": lambda r: (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}),
    "401 echoing its first 12 characters": lambda r: (401, {"error": {"message": f"bad key {KEY[:12]}..."}}),
    "500 with the key split by a line break": lambda r: (500, f"trace: key={KEY[:15]}\n{KEY[15:]} failed"),
    "400 with the key in typographic quotes": lambda r: (400, {"error": {"message": f"key “{KEY}” rejected"}}),
    "404 listing the key as a model": lambda r: (404, {"error": {"message": "model 'x' not found"}})
    if r["path"].endswith("/chat/completions") else (200, {"data": [{"id": KEY}, {"id": "llama3"}]}),
}


@pytest.mark.parametrize("behaviour", list(HOSTILE))
def test_server_text_that_repeats_the_key_is_blanked(server, behaviour, caplog):
    caplog.set_level(logging.DEBUG)
    server.respond = HOSTILE[behaviour]
    with pytest.raises(EnhanceError) as err:
        enhance_prompt(IDEA, None, _settings(server.url), _approved())
    assert server.chat_requests()[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert "***" in str(err.value), str(err.value)
    assert_no_part_of(KEY, str(err.value), caplog.text)
    if behaviour.startswith("404"):
        assert isinstance(err.value, UnknownModel) and "***, llama3" in str(err.value)


def test_a_reply_that_echoes_the_key_does_not_reach_the_caption(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.respond = lambda r: (200, completion(f"A tram passes; its sign reads {r['headers']['authorization']}."
                                                f"\n\nThe audio shows rain and {KEY[4:20]}."))
    result = enhance_prompt(IDEA, None, _settings(server.url), _approved())
    assert result.caption == "A tram passes; its sign reads Bearer ***.\n\nThe audio shows rain and ***."
    assert any("contained (part of) your API key, blanked out here as ***" in w for w in result.warnings)
    assert_no_part_of(KEY, result.caption, *result.warnings, caplog.text)


@pytest.mark.parametrize("script", [
    lambda conn, r: conn.sendall(http_reply(302, "", {"Location": f"https://collector.example/k?key={KEY}"})),
    lambda conn, r: conn.sendall(f"HELLO {r['headers']['authorization']}\r\n\r\n".encode()),
    lambda conn, r: conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n{KEY}".encode()),
])
def test_hostile_http_that_repeats_the_key_is_blanked(script, caplog):
    caplog.set_level(logging.DEBUG)
    with ScriptedServer(lambda conn, r: (script(conn, r), time.sleep(0.2))) as hostile:
        with pytest.raises(EnhanceError) as err:
            enhance_prompt(IDEA, None, _settings(hostile.url), _approved())
    assert hostile.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert_no_part_of(KEY, str(err.value), caplog.text)


def test_blank_key_catches_whole_and_partial_keys():
    assert blank_key(f"a {KEY} b", KEY) == "a *** b"
    assert blank_key(f"x={KEY[3:14]}&y=1", KEY) == "x=***&y=1"  # the run of key characters around the piece
    assert blank_key(f"({KEY[:7]})", KEY) == f"({KEY[:7]})"  # seven characters are not recognisable
    assert blank_key("short key abc here", "abc") == "short key *** here"
    assert blank_key("nothing", None) == "nothing"


# -- proxies: only for listed hosts, and the key only inside the tunnel ---------------------------------------------

@pytest.fixture()
def no_proxy_env(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_listed_host_goes_through_the_users_http_proxy(no_proxy_env):
    reply = http_reply(200, completion("A tram passes.\n\nThe audio shows rain."))
    with ScriptedServer(lambda conn, r: conn.sendall(reply)) as proxy:
        no_proxy_env.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        result = enhance_prompt(IDEA, None, _settings("http://llm.test/v1"), {HOSTS_VAR: "llm.test"})
        (request,) = proxy.requests
    assert result.caption.startswith("A tram passes.")
    assert request["path"] == "http://llm.test/v1/chat/completions" and request["headers"]["host"] == "llm.test"
    assert "authorization" not in request["headers"]


def test_the_key_goes_to_a_proxy_only_inside_the_tls_tunnel(no_proxy_env):
    with ScriptedServer(lambda conn, r: conn.sendall(http_reply(403, "no"))) as proxy:
        no_proxy_env.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(ServerUnreachable, match="the proxy refused a tunnel to llm.test \\(HTTP 403\\)"):
            enhance_prompt(IDEA, None, _settings("https://llm.test/v1"), {HOSTS_VAR: "llm.test", KEY_VAR: KEY})
        (request,) = proxy.requests
    assert request["method"] == "CONNECT" and request["path"] == "llm.test:443"
    assert_no_part_of(KEY, str(request))


def test_this_machine_is_reached_directly_even_with_a_proxy_set(server, no_proxy_env):
    with ScriptedServer(lambda conn, r: conn.sendall(http_reply(500, "proxy"))) as proxy:
        no_proxy_env.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        enhance_prompt(IDEA, None, _settings(server.url), {})
        assert proxy.requests == [] and len(server.chat_requests()) == 1
