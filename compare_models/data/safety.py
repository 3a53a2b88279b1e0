"""Guards for untrusted names, keys and URLs, in one place.

* Local paths built from a key, a file name or a parameter must stay inside their folder
  (`contained`); names that become file names or S3 key parts must be plain (`plain_name`,
  `safe_filename`).
* URLs we download from must be http(s), carry no credentials, and (unless the user allows
  it: `Settings.allow_private_urls`, which callers pass in as `allow_private`) must not point
  at loopback, link-local, private or otherwise non-public addresses:
  such a URL can reach services that trust this machine (cloud metadata endpoints, the
  local S3 and Prefect servers). `check_url` resolves the host and checks every address;
  `compare_models.data.files.download_url` checks redirects and the connected peer too.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
import urllib.request
from pathlib import Path

PRIVATE_URLS_ENV = "COMPARE_MODELS_ALLOW_PRIVATE_URLS"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class UnsafeURLError(ValueError):
    """A URL we refuse to fetch; the message names the problem and the fix (never a password)."""


class UnsafePathError(ValueError):
    """A derived local path would leave its folder."""


# ── names and paths ──────────────────────────────────────────────────────────


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256.fullmatch(value))


def plain_name(value: object) -> bool:
    """A single file name of letters, digits and ``._+-``, not starting with a dot ('..' is not one)."""
    return isinstance(value, str) and bool(_PLAIN_NAME.fullmatch(value))


def safe_filename(name: str, default: str) -> str:
    """`name` made plain (other characters become '-'), or `default` when nothing usable is left."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "-" for c in name)[
        :255
    ].lstrip("._+-")
    return cleaned if plain_name(cleaned) else default


def contained(
    base: Path,
    *parts: str,
    error: type[Exception] = UnsafePathError,
    what: str = "path",
    hint: str = "",
) -> Path:
    """`base / parts...`, resolved, checked to lie inside `base` (symbolic links followed).
    A refusal raises `error`, its message ending with "; `hint`" when one is given."""
    root = Path(base).resolve()
    end = f"; {hint}" if hint else ""
    for part in parts:
        if (
            not isinstance(part, str)
            or not part
            or "\x00" in part
            or part.startswith("/")
            or "\\" in part
        ):
            raise error(
                f"refusing the {what} {shown(part)}: it must be a relative path of plain names{end}"
            )
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise error(f"refusing the {what} {shown('/'.join(parts))}: it leads outside {root}{end}")
    return path


def shown(value: object, limit: int = 120) -> str:
    """A short, printable rendering of an untrusted value for an error message."""
    text = repr(value) if isinstance(value, str) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 5] + "...'"


# ── URLs ─────────────────────────────────────────────────────────────────────


def redact_url(url: str) -> str:
    """The URL without any user:password@ part (for messages and logs)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, parts.query, ""))


#: `scheme://user:password@host`: the part a message must never show
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_REASON = 300


def redacted(text: str) -> str:
    """`text` (an error, a URI among other words) without any URL's user and password."""
    return _USERINFO.sub("***@", text)


def reason_of(exc: BaseException) -> str:
    """One line saying why a call failed, without credentials, bounded in length."""
    message = redacted(" ".join(str(exc).split()) or type(exc).__name__)
    return message if len(message) <= _MAX_REASON else message[: _MAX_REASON - 1] + "…"


def check_url_form(url: str) -> urllib.parse.SplitResult:
    """Scheme and credentials (no network): http(s) only, no user:password@."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise UnsafeURLError(
            f"{redact_url(url)} is not a valid URL; pass an http(s):// URL, a local path or an s3:// URI"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURLError(
            f"refusing {parts.scheme or 'a scheme-less'} URL {redact_url(url)}: only http:// and https:// are fetched"
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeURLError(
            f"refusing {redact_url(url)} given with credentials (user:password@): they would be stored in run "
            "metadata and logs. Put the file where it needs none (or in S3 and pass its s3:// URI), or use a presigned URL."
        )
    if not parts.hostname:
        raise UnsafeURLError(f"{redact_url(url)} has no host; pass a full http(s):// URL")
    return parts


def address_problem(address: str) -> str | None:
    """Why an IP address is not public ('loopback', 'link-local', ...), or None when it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return label
    return None if ip.is_global else "non-public"


def private_refusal(url: str, host: str, address: str, problem: str) -> UnsafeURLError:
    at = host if host == address else f"{host} ({address})"
    return UnsafeURLError(
        f"refusing to download {redact_url(url)}: {at} is a {problem} address, which can reach services that trust "
        f"this machine. Set {PRIVATE_URLS_ENV}=1 if this is your own local mirror, or pass the file as a local path "
        "or an s3:// URI instead."
    )


def proxied(url: str) -> bool:
    """Whether urllib would fetch `url` through a proxy from the environment."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse what `check_url_form` refuses and, unless `allow_private`, any host that resolves to a
    non-public address. Raises `UnsafeURLError`, or `OSError` (socket.gaierror) when the host does
    not resolve."""
    parts = check_url_form(url)
    if allow_private:
        return
    host = parts.hostname or ""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if proxied(
            url
        ):  # the proxy resolves the name; a literal address or localhost is still refused
            addresses = ["127.0.0.1"] if host.lower() in ("localhost", "localhost.") else []
        else:
            infos = socket.getaddrinfo(
                host,
                parts.port or (443 if parts.scheme == "https" else 80),
                type=socket.SOCK_STREAM,
            )
            addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        if problem := address_problem(address):
            raise private_refusal(url, host, address, problem)
