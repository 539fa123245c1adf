"""The one fetcher of remote videos, for batch manifests and ``kuaimod serve``.

A URL comes from a manifest or from an API client: either may be hostile. So:

* only ``http://`` and ``https://``; the URL is normalised first and refused if its path holds a dot
  segment in any spelling (``../``, ``%2e%2e``, ``.%2E``, backslashes, encoded slashes);
* when an allow-list is configured, the normalised URL must lie under one of its prefixes (scheme,
  host and port equal, path under the prefix's path); this is checked again on every redirect hop;
* the host is resolved once and the connection goes to that address (no second lookup an attacker's
  DNS could answer differently); every address it resolves to must be public, unless its network
  was explicitly allowed. Loopback, private, link-local, shared and reserved addresses are refused,
  also when a redirect leads there;
* deadlines for the connection, for each read and for the whole download (a watchdog closes the
  socket, so an origin dripping one byte at a time is cut off), and a size cap;
* errors say nothing about the network behind the server: a refused, closed, filtered or
  unresolvable target, a TLS failure or an HTTP error all read "could not fetch the URL". Only the
  URL's own shape (not allowed, too large) gets its own message.

The download is written to a private temporary file and renamed to its content digest
(:func:`kuaimod_open.ingest.keys.stored_name`), so concurrent downloads never see each other's
partial files.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

from kuaimod_open.errors import ConfigError, InputError
from kuaimod_open.ingest.keys import safe_suffix, stored_name

# A remote video larger than this is refused rather than filling the disk (override per job).
MAX_DOWNLOAD_BYTES = 2 << 30
FAILED = "could not fetch the URL (the origin did not deliver a video)"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK = 1 << 16
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(InputError):
    """A URL was refused or could not be fetched. ``reason`` says which, for an HTTP status."""

    def __init__(self, message: str, reason: Literal["refused", "too_large", "failed"]) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched, from where, and within which limits."""

    # Allowed URL prefixes, e.g. "https://cdn.example.com/videos/"; empty: any http(s) URL.
    prefixes: tuple[str, ...] = ()
    # Networks reachable although not public (e.g. "10.20.0.0/16" for in-house object storage).
    allow_networks: tuple[str, ...] = ()
    max_bytes: int = MAX_DOWNLOAD_BYTES
    connect_s: float = 10.0
    read_s: float = 30.0  # longest wait for any single read
    total_s: float = 600.0  # the whole download, redirects included
    max_redirects: int = 5
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _prefixes: tuple[SplitResult, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)
        except ValueError as exc:
            raise ConfigError(f"--allow-network: not a network (write a CIDR, e.g. 10.0.0.0/8): {exc}") from None
        object.__setattr__(self, "_networks", networks)
        object.__setattr__(self, "_prefixes", tuple(_prefix(p) for p in self.prefixes))

    def allows_address(self, address: IPAddress) -> bool:
        """Whether a resolved address may be connected to."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self._networks if net.version == address.version):
            return True
        return address.is_global and not address.is_multicast

    def allows_url(self, url: SplitResult) -> bool:
        """Whether a normalised URL lies under an allowed prefix (or no allow-list is set)."""
        if not self._prefixes:
            return True
        for prefix in self._prefixes:
            if (url.scheme, url.hostname, _port(url)) != (prefix.scheme, prefix.hostname, _port(prefix)):
                continue
            base = prefix.path
            if base in ("", "/") or url.path == base or url.path.startswith(base.rstrip("/") + "/"):
                return True
        return False


@dataclass(frozen=True)
class Fetched:
    """A downloaded video: where it is stored, its sha256, and the URL it finally came from."""

    path: Path
    content: str
    url: str


def normalise(url: str) -> SplitResult:
    """The URL, checked and normalised: http(s), a host, no credentials, no dot segments in any spelling.

    Raises:
        FetchError: (refused) the URL breaks one of those rules.
    """
    if not isinstance(url, str) or any(c in url for c in "\x00\r\n\t") or len(url) > 4096:
        raise FetchError("refused: not a usable URL (control characters, or over 4096 characters)", "refused")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise FetchError("refused: not a well-formed URL", "refused") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise FetchError(f"refused: only http:// and https:// URLs are fetched (got {scheme or 'none'}:)", "refused")
    if not parts.hostname:
        raise FetchError("refused: the URL names no host", "refused")
    if parts.username is not None or parts.password is not None:
        raise FetchError("refused: URLs with credentials (user@host) are not fetched", "refused")
    decoded = unquote(parts.path)
    lowered = decoded.lower()
    segments = decoded.replace("\\", "/").split("/")
    if any(s in (".", "..") for s in segments) or any(m in lowered for m in ("%2e", "%2f", "%5c", "\x00")):
        raise FetchError("refused: the URL path contains a '.' or '..' segment (in some spelling)", "refused")
    host = parts.hostname.lower().rstrip(".")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = re.sub("/{2,}", "/", parts.path) or "/"
    return urlsplit(urlunsplit((scheme, netloc, path, parts.query, "")))


def check_url(url: str, policy: FetchPolicy) -> str:
    """The normalised URL if ``policy`` allows it (by its text alone; addresses are checked on connecting).

    Raises:
        FetchError: (refused) not http(s), malformed, a dot segment, or not under an allowed prefix.
    """
    parts = normalise(url)
    if not policy.allows_url(parts):
        raise FetchError("refused: the URL is not under any allowed prefix (--allow-url)", "refused")
    return parts.geturl()


def fetch(url: str, folder: str | Path, policy: FetchPolicy | None = None) -> Fetched:
    """Download ``url`` into ``folder`` under ``policy`` (see the module docstring).

    Raises:
        FetchError: refused (the URL or a redirect breaks the policy), too_large, or failed (anything
            on the network side, reported without detail).
    """
    policy = policy or FetchPolicy()
    folder = Path(folder)
    deadline = time.monotonic() + policy.total_s
    current = check_url(url, policy)
    for _ in range(policy.max_redirects + 1):
        response, conn = _request(current, policy, deadline)
        try:
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise FetchError(FAILED, "failed")
                current = check_url(urljoin(current, location.strip()), policy)  # every hop, re-checked
                continue
            if response.status != 200:
                raise FetchError(FAILED, "failed")
            return _store(response, conn, current, folder, policy, deadline)
        finally:
            if conn.watchdog is not None:
                conn.watchdog.cancel()
            conn.close()
    raise FetchError(FAILED, "failed")  # too many redirects


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address chosen in advance; Host header and TLS name stay the host's."""

    def __init__(self, host: str, port: int, address: IPAddress, tls: bool, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address, self.tls = address, tls
        self.watchdog: _Watchdog | None = None

    def connect(self) -> None:
        sock = socket.create_connection((str(self.address), self.port), timeout=self.timeout)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def _request(url: str, policy: FetchPolicy, deadline: float) -> tuple[http.client.HTTPResponse, _PinnedConnection]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", _port(parts)
    address = _resolve(host, port, policy)
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(FAILED, "failed")
    conn = _PinnedConnection(host, port, address, parts.scheme == "https", min(policy.connect_s, left))
    target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    watchdog = conn.watchdog = _Watchdog(conn, deadline)
    try:
        conn.connect()
        conn.sock.settimeout(min(policy.read_s, max(0.01, deadline - time.monotonic())))
        watchdog.start()
        conn.request("GET", target, headers={"User-Agent": "kuaimod-fetch", "Accept-Encoding": "identity"})
        response = conn.getresponse()
    except (OSError, http.client.HTTPException, ValueError):
        watchdog.cancel()
        conn.close()
        raise FetchError(FAILED, "failed") from None  # no errno, no hint of what is behind the address
    return response, conn


def _resolve(host: str, port: int, policy: FetchPolicy) -> IPAddress:
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise FetchError(FAILED, "failed") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    # Every address must be allowed: a name resolving to a public and a private address is refused,
    # with the same words as any other failure (whether an inner name resolves is not the client's business).
    if not addresses or not all(policy.allows_address(a) for a in addresses):
        raise FetchError(FAILED, "failed")
    return addresses[0]


class _Watchdog:
    """Closes the connection when the total deadline passes, whatever a read is waiting for."""

    def __init__(self, conn: _PinnedConnection, deadline: float) -> None:
        self.conn = conn
        self.timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self.timer.daemon = True
        self.fired = False

    def start(self) -> None:
        self.timer.start()

    def cancel(self) -> None:
        self.timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _store(
    response: http.client.HTTPResponse,
    conn: _PinnedConnection,
    url: str,
    folder: Path,
    policy: FetchPolicy,
    deadline: float,
) -> Fetched:
    watchdog = conn.watchdog or _Watchdog(conn, deadline)
    too_large = FetchError(f"refused: the video is larger than the {policy.max_bytes} byte limit", "too_large")
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > policy.max_bytes:
        watchdog.cancel()
        raise too_large
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".part-")
    tmp = Path(tmp_name)
    h, got = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FetchError(FAILED, "failed")
                if conn.sock is not None:
                    conn.sock.settimeout(min(policy.read_s, left))
                try:
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException, ValueError):
                    raise FetchError(FAILED, "failed") from None
                if watchdog.fired:
                    raise FetchError(FAILED, "failed")
                if not chunk:
                    break
                got += len(chunk)
                if got > policy.max_bytes:
                    raise too_large
                h.update(chunk)
                out.write(chunk)
        if length is not None and length.strip().isdigit() and got != int(length):
            raise FetchError(FAILED, "failed")  # the origin closed early: a truncated file is not a video
        suffix = safe_suffix(urlsplit(url).path) or ".mp4"
        dst = folder / stored_name(h.hexdigest(), suffix)
        os.replace(tmp, dst)
    finally:
        watchdog.cancel()
        tmp.unlink(missing_ok=True)
    return Fetched(path=dst, content=h.hexdigest(), url=url)


def _prefix(text: str) -> SplitResult:
    try:
        return normalise(text)
    except FetchError as exc:
        raise ConfigError(f"--allow-url {text!r}: {exc}") from None


def _port(parts: SplitResult) -> int:
    return parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)


__all__ = [
    "FAILED",
    "MAX_DOWNLOAD_BYTES",
    "FetchError",
    "FetchPolicy",
    "Fetched",
    "check_url",
    "fetch",
    "normalise",
]
