"""Browser safety for a server without an API key.

Without a key, anything that can reach the port may use it, and on a laptop that includes
every web page open in the user's browser: a page may POST to http://127.0.0.1:8000 (a
"simple" cross-origin request needs no preflight when its Content-Type is text/plain or a
form), and a site whose DNS name is rebound to 127.0.0.1 reads the answers as same-origin. So,
without a key:
- a request from a browser page of another origin (its Origin header is not this server's
  Host) is refused; the chat page served here is same-origin and passes;
- on a loopback bind, the Host header must be a loopback name (DNS rebinding sends the
  attacker's name);
- a POST must say Content-Type: application/json, which a page can only send cross-origin
  after a CORS preflight, which this server never grants.
Clients that are not browsers (curl, the openai client, lm-eval) send no Origin header.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from danlu.infer.openai_api import ApiError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def browser_refusal(headers: dict[str, str], server_ip: str, method: str) -> ApiError | None:
    """Why a key-less server refuses this request, or None to serve it."""
    host = headers.get("host", "")
    if _is_loopback(server_ip) and not _is_loopback(_hostname(host)):
        return ApiError(
            403,
            f"Host '{host}' is not this server's name; requests must come to 127.0.0.1 or "
            "localhost (start the server with --api-key to serve other names)",
            code="forbidden_host",
        )
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return ApiError(
            403,
            f"cross-origin request from '{origin}' refused: this server has no API key, so only "
            "its own page may call it from a browser (start it with --api-key to allow others)",
            code="cross_origin_refused",
        )
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if method == "POST" and content_type != "application/json":
        return ApiError(
            415,
            f"Content-Type must be application/json, got '{content_type or 'none'}' (curl: add "
            "-H 'Content-Type: application/json')",
            code="unsupported_media_type",
        )
    return None


def _hostname(host: str) -> str:
    """The name part of a Host header: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    return urlsplit(f"//{host}").hostname or ""


def _is_loopback(name: str) -> bool:
    if name.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
