"""Who may receive what: the hosts the user approved and their API key, read from two fixed-name environment
variables a workflow cannot change, and the checks that keep a key out of every text the pack shows.

A workflow is untrusted: its ``base_url`` may point anywhere and its ``api_key_env`` may name any variable.
So the pack sends requests only to this machine's loopback (no key) or to hosts listed in ``MOVA_LLM_HOSTS``,
takes a key only from ``MOVA_LLM_API_KEY`` (or the variable the user's own host list names for a host), sends it
only to the listed hosts, and never reads a variable a workflow names (``api_key_env`` is only compared with the
user's setting). Plain Python, standard library only.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

from .llm_http import Route, Target, loopback_address, proxy_for

HOSTS_VAR = "MOVA_LLM_HOSTS"
KEY_VAR = "MOVA_LLM_API_KEY"
GUIDE = "docs/prompting.md"
SERVER_TEXT_CHARS = 300  # how much server text a message repeats

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_KEY_PREFIXES = ("sk_", "sk-", "pk_", "rk_", "hf_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox",
                 "AKIA", "ASIA", "AIza", "glpat", "eyJ")
_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class AccessError(ValueError):
    """The workflow or the user's settings do not allow the request; the message says what to change.
    ``auth`` marks key problems (the caller raises AuthError for those)."""

    def __init__(self, message: str, auth: bool = False):
        super().__init__(message)
        self.auth = auth


def is_plain_name(text: str) -> bool:
    """True when ``text`` is shaped like an environment variable's name (OPENAI_API_KEY), not like a key, so a
    message may repeat it."""
    if not _NAME.fullmatch(text) or text.startswith(_KEY_PREFIXES) or sum(c.isdigit() for c in text) > 4:
        return False
    segments = text.split("_")
    return all(len(s) <= 20 and not (len(s) >= 10 and any(c.isdigit() for c in s)) for s in segments)


# -- URLs --------------------------------------------------------------------------------------------------------

def _bad_character(text: str) -> str | None:
    for position, char in enumerate(text, start=1):
        if char in "\r\n":
            return f"a line break ({_code(char)}) at character {position}"
        if char == "\t":
            return f"a tab ({_code(char)}) at character {position}"
        if char.isspace():
            return f"a space ({_code(char)}) at character {position}"
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return f"an invisible control character ({_code(char)}) at character {position}"
    return None


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _host(raw: str, what: str) -> str:
    """A URL's host name lower-cased, ASCII (IDNA) and checked; IPv6 without brackets."""
    host = raw.lower().rstrip(".")
    if not host:
        raise AccessError(f"{what} has no host name: e.g. http://localhost:11434/v1")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise AccessError(f"{what}: '{host}' is not a valid IPv6 address (write it in brackets, e.g. "
                              "http://[::1]:11434/v1)") from None
        return host
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise AccessError(f"{what}: the host name '{host}' cannot be written in ASCII (IDNA): check its "
                              "spelling") from None
    if _NUMERIC_HOST.fullmatch(host) and not _is_dotted_ipv4(host):  # 127.1, 2130706433, 0x7f000001...
        raise AccessError(f"{what}: '{host}' is not a standard IP address: write it as four numbers from 0 to 255 "
                          "separated by dots (e.g. 127.0.0.1)")
    if not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise AccessError(f"{what}: the host name '{host}' holds characters a host name cannot have (letters, "
                          "digits, '-' and '.' only)")
    return host


def _is_dotted_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return False


def _port(parts: urllib.parse.SplitResult, what: str) -> int | None:
    try:
        port = parts.port
    except ValueError:
        raw = parts.netloc.rsplit("]", 1)[-1].rpartition(":")[2]
        raise AccessError(f"{what}: the port {raw!r} is not a number from 1 to 65535 (e.g. "
                          "http://localhost:11434/v1)") from None
    if port == 0:
        raise AccessError(f"{what}: port 0 is not a port a server listens on: give the server's port (1 to 65535)")
    return port


def parse_base_url(url: object) -> Target:
    """``base_url`` checked (http/https, a host, a numeric port, no user name, query, spaces or control characters)
    and trimmed to the part before /chat/completions; raises AccessError before any connection."""
    if not isinstance(url, str):
        raise AccessError(f"base_url must be text, got {type(url).__name__}")
    url = url.strip()
    if not url:
        raise AccessError("base_url is empty: give the server's OpenAI-compatible address, e.g. "
                          "http://localhost:11434/v1 (Ollama)")
    bad = _bad_character(url)
    if bad:
        raise AccessError(f"base_url {url!r} holds {bad}: remove it (addresses have no spaces or control "
                          "characters; write a space in a path as %20)")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as err:
        raise AccessError(f"base_url {url!r} is not a valid address ({err}): e.g. http://localhost:11434/v1") \
            from None
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        raise AccessError(f"base_url {url!r} is not an http:// or https:// address: give the server's "
                          "OpenAI-compatible URL, e.g. http://localhost:11434/v1 (Ollama)")
    if "@" in parts.netloc:
        # the part before '@' may be a password or key: never repeated
        raise AccessError("base_url holds a user name or password (text before '@' in the address): remove it; "
                          f"a key goes in the environment variable {KEY_VAR} (see {GUIDE})", auth=True)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise AccessError(f"base_url {url!r} has a query or fragment ('?' or '#'): give only the address up to "
                          "/v1")
    host = _host(parts.hostname or "", f"base_url {url!r}")
    port = _port(parts, f"base_url {url!r}") or (443 if parts.scheme == "https" else 80)
    path = parts.path.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if path.endswith(tail):
            path = path[: -len(tail)].rstrip("/")
    path = urllib.parse.quote(path, safe="/%:@!$&'()*+,;=-._~")  # a non-ASCII path is sent percent-encoded
    return Target(parts.scheme, host, port, path)


def is_loopback_target(target: Target) -> bool:
    """True for 'localhost' and loopback IP literals (127.0.0.0/8, ::1): this machine."""
    return target.host == "localhost" or loopback_address(target.host)


# -- the user's host list ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostRule:
    """One entry of MOVA_LLM_HOSTS: ``host`` (normalised), ``port`` (None: any), ``scheme`` (None: either),
    ``key_var``: the variable holding this host's key (None: MOVA_LLM_API_KEY; "": never send a key)."""

    host: str
    port: int | None
    scheme: str | None
    key_var: str | None

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.scheme}://{host}" if self.scheme else host
        return text + (f":{self.port}" if self.port is not None and not self.scheme else "")


def host_rules(environ) -> list[HostRule]:
    """The entries of MOVA_LLM_HOSTS (commas or spaces between them): ``host``, ``host:port`` or
    ``https://host[:port]``, each optionally followed by ``=VARIABLE`` (that host's key) or ``=`` (no key)."""
    text = environ.get(HOSTS_VAR, "") or ""
    rules = []
    for entry in (e for e in re.split(r"[,\s]+", text) if e):
        where, sep, var = entry.partition("=")
        what = f"{HOSTS_VAR} entry '{where}'"
        if var and not is_plain_name(var):
            raise AccessError(f"{what}: after '=' comes the NAME of the environment variable that holds this "
                              "host's key, and what follows is not shaped like a name (if it is the key itself, "
                              f"move it into {KEY_VAR} or a variable of its own)", auth=True)
        if not where or _bad_character(where):
            raise AccessError(f"{what} is not a host: list host names such as api.openai.com or localhost:1234, "
                              "separated by commas")
        scheme = None
        if "://" in where:
            try:
                parts = urllib.parse.urlsplit(where)
            except ValueError:
                raise AccessError(f"{what} is not a valid address") from None
            if parts.scheme not in ("http", "https"):
                raise AccessError(f"{what}: only http:// or https:// addresses (or a bare host name) can be listed")
            scheme = parts.scheme
        else:
            try:
                parts = urllib.parse.urlsplit("//" + where)
            except ValueError:
                raise AccessError(f"{what} is not a valid host (IPv6 addresses go in brackets: [::1]:8080)") \
                    from None
        if "@" in parts.netloc or parts.path.strip("/") or parts.query or parts.fragment:
            raise AccessError(f"{what}: list only host[:port] (or scheme://host[:port]), without a path, a user "
                              "name or a query")
        port = _port(parts, what)
        if scheme and port is None:
            port = 443 if scheme == "https" else 80
        rules.append(HostRule(_host(parts.hostname or "", what), port, scheme, var if sep else None))
    return rules


def matching_rule(rules: list[HostRule], target: Target) -> HostRule | None:
    """The entry that approves ``target`` (one with a port before one without), or None."""
    found = [r for r in rules if r.host == target.host and (r.port is None or r.port == target.port)
             and (r.scheme is None or r.scheme == target.scheme)]
    found.sort(key=lambda r: (r.port is None, r.scheme is None))
    return found[0] if found else None


# -- the key -----------------------------------------------------------------------------------------------------

def checked_key(value: str, var: str) -> str:
    """The key in ``var``, trimmed; refused (never repeated) when it cannot go into an HTTP header as is."""
    key = value.strip()
    problem = None
    if any(c in key for c in "\r\n"):
        problem = "holds a line break"
    elif not key.isascii():
        problem = "holds a character that is not plain ASCII (typographic quotes or a non-breaking space pasted " \
                  "with it?)"
    elif len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        problem = "is wrapped in quotes"
    elif key.lower().startswith("bearer "):
        problem = "starts with 'Bearer ' (the pack adds that itself)"
    elif any(c.isspace() or not c.isprintable() for c in key):
        problem = "holds a space or a control character"
    if problem:
        raise AccessError(f"the API key in environment variable {var} {problem}: set {var} to the key alone, "
                          "exactly as the provider shows it, then restart ComfyUI", auth=True)
    return key


@dataclass(frozen=True)
class Access:
    """What a request may do: go to ``target`` by ``route``, carrying ``key`` (from ``key_var``) or none."""

    target: Target
    route: Route
    key: str | None = field(default=None, repr=False)
    key_var: str = ""
    listed: bool = False  # approved in MOVA_LLM_HOSTS (else: an unlisted loopback host)


def _pasted_key_message() -> str:
    return ("api_key_env holds text that is not shaped like an environment variable's name; if it is an API key, "
            "remove it from the node now (widget values are saved in workflows and images, so replace that key "
            f"with the provider if the workflow was shared), then put the key in {KEY_VAR} before starting "
            f"ComfyUI and list the server's host in {HOSTS_VAR} (see {GUIDE})")


def access_for(base_url: object, api_key_env: object, environ) -> Access:
    """The checked target, route and key for a request the workflow asks for; AccessError when the user's
    settings do not allow it. Reads only MOVA_LLM_HOSTS, MOVA_LLM_API_KEY and a variable MOVA_LLM_HOSTS names."""
    if api_key_env is not None and not isinstance(api_key_env, str):
        raise AccessError(f"api_key_env must be text (best left empty), got {type(api_key_env).__name__}", auth=True)
    legacy = (api_key_env or "").strip()
    if legacy and not is_plain_name(legacy):
        raise AccessError(_pasted_key_message(), auth=True)
    target = parse_base_url(base_url)
    rule = matching_rule(host_rules(environ), target)
    loopback = is_loopback_target(target)
    if rule is None and not loopback:
        raise AccessError(
            f"base_url's host {target.netloc} is not on this machine and not in your {HOSTS_VAR} list, so MOVA "
            "Prompt Enhance sends nothing there (a shared workflow could point it at anyone's server). If you trust "
            f"it, set {HOSTS_VAR}={target.netloc} (and {KEY_VAR}=<your key> if it needs one) in the environment "
            f"before starting ComfyUI (see {GUIDE}); for a server on this machine use http://localhost:<port>/v1")
    key_var = (KEY_VAR if rule.key_var is None else rule.key_var) if rule is not None else ""
    if legacy and legacy != key_var:
        where = target.netloc
        if rule is None:
            fix = (f"clear api_key_env: {where} is on this machine and gets no key unless you list it in {HOSTS_VAR} "
                   f"(e.g. {HOSTS_VAR}={where}) and set {KEY_VAR}")
        elif key_var:
            fix = (f"your {HOSTS_VAR} gives {where} the key in {key_var}: clear api_key_env (or, to use {legacy} for "
                   f"this host, write {HOSTS_VAR}={where}={legacy})")
        else:
            fix = f"your {HOSTS_VAR} sends no key to {where} ('{rule.describe()}='): clear api_key_env"
        raise AccessError(f"api_key_env names {legacy}, but MOVA Prompt Enhance no longer reads a variable a "
                          "workflow names (a shared workflow could send any of your secrets with it): " + fix
                          + f" (see {GUIDE})", auth=True)
    key = None
    if key_var:
        value = environ.get(key_var)
        if value is not None and value.strip():
            key = checked_key(value, key_var)
        elif rule.key_var:  # the user named a variable for this host: it must hold the key
            state = "is empty" if value is not None else "is not set"
            raise AccessError(f"{HOSTS_VAR} gives {target.netloc} the key in {key_var}, which {state}: set it "
                              "before starting ComfyUI (e.g. 'export {0}=...' on Linux/macOS, 'setx {0} ...' on "
                              "Windows) and restart ComfyUI".format(key_var), auth=True)
    if key and target.scheme != "https" and not loopback and rule.scheme != "http":
        raise AccessError(f"refusing to send the API key from {key_var} over plain http to {target.netloc}: use the "
                          f"server's https:// address, or list it as http://{target.netloc} in {HOSTS_VAR} if you "
                          f"accept the key crossing the network unencrypted (or write '{target.netloc}=' there to send "
                          "no key)", auth=True)
    if loopback:
        route = Route(loopback_only=True)
    else:
        proxy = proxy_for(target)
        route = Route(proxy=proxy[0], proxy_auth=proxy[1]) if proxy else Route()
    return Access(target, route, key, key_var if key else "", rule is not None)


# -- keeping the key out of text ---------------------------------------------------------------------------------

def blank_key(text: str, key: str | None) -> str:
    """``text`` with the key, and every run of key-like characters (letters, digits and the key's own symbols)
    that shares 8 characters in a row with it, as ***."""
    if not key or not text:
        return text
    symbols = {c for c in key if not c.isalnum()}

    def in_run(char: str) -> bool:
        return char.isalnum() or char in symbols
    n = min(8, len(key))
    spans = []
    for gram in {key[i:i + n] for i in range(len(key) - n + 1)}:
        start = text.find(gram)
        while start != -1:
            spans.append((start, start + n))
            start = text.find(gram, start + 1)
    if not spans:
        return text
    widened = []
    for start, end in spans:
        while start > 0 and in_run(text[start - 1]):
            start -= 1
        while end < len(text) and in_run(text[end]):
            end += 1
        widened.append((start, end))
    widened.sort()
    out, last = [], 0
    for start, end in widened:
        if start < last:
            if end > last:
                last = end
            continue
        out.append(text[last:start])
        out.append("***")
        last = end
    out.append(text[last:])
    return "".join(out)


def excerpt(text: object, key: str | None, limit: int = SERVER_TEXT_CHARS) -> str:
    """Server text for a message: the key blanked, control characters and line breaks as spaces, at most
    ``limit`` characters."""
    text = str(text)[: limit * 4]
    text = blank_key(text, key)
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"
