"""Fetching a storefront's image: only from configured hosts, with size, pixel and time limits.

    >>> image = fetch_source("https://images.example/cat.jpg", policy)
    >>> image.width, image.height, image.format

Rules:
- http(s) only; the host (and port, if the entry names one) must be in
  ``SMI_SOURCE_HOSTS``; every redirect target is checked the same way;
- a name that resolves to a private, loopback, link-local or reserved
  address is refused, unless the listed entry is that IP address itself
  or ``localhost`` (so a public name cannot be pointed at our network);
  the connection goes to the address that was checked, not to a second
  answer from the resolver (a name whose answer changes in between, DNS
  rebinding, cannot reach a private address); TLS still checks the name;
- at most ``max_bytes`` are read, counted after decompression as they
  arrive (a 5 KB body that would inflate to gigabytes stops at the limit;
  a body compressed twice is refused), in at most ``timeout_s`` seconds
  for everything, headers included (httpx's own timeouts restart with
  every byte, so a server dripping its headers would hold a thread for
  as long as it likes: the client is closed at the deadline instead);
- the bytes must decode as a JPEG, PNG or WebP within the pixel limit:
  every pixel is checked, but never held (``shared.images.check_image``:
  a small gray copy instead), and at most ``DECODES_AT_ONCE`` images are
  checked at once per process, so memory stays bounded however many
  checkouts and previews arrive together.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx
import numpy as np

from gateway.errors import SourceImageError
from shared.images import ImageError, ImageTooLargeError, check_image

MAX_REDIRECTS = 3
DECODES_AT_ONCE = 2
_DECODES = threading.BoundedSemaphore(DECODES_AT_ONCE)
TOO_SLOW = "the image took too long to download"
MAX_URL_LENGTH = 2048
# zlib's window bits for each Content-Encoding we decode: gzip's header, zlib's.
WINDOW_BITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


@dataclass(frozen=True)
class SourcePolicy:
    """Where images may come from and how big they may be."""

    hosts: tuple[str, ...]
    max_bytes: int
    max_pixels: int
    timeout_s: float


@dataclass(frozen=True)
class SourceImage:
    """A fetched, decodable image."""

    url: str
    data: bytes
    format: str
    width: int  # as people see it (EXIF orientation applied)
    height: int
    small: np.ndarray  # upright 8-bit gray, about an eighth of each side


# One TLS context for every fetch: httpx builds a new one for each client otherwise, loading
# the CA bundle each time (about 10-20 ms of CPU, half a checkout's). Sharing it across
# threads is what it is made for.
_TLS = httpx.create_ssl_context()


def fetch_source(url: str, policy: SourcePolicy) -> SourceImage:
    """Fetch and check one image; ``SourceImageError`` says what was wrong, for the customer."""
    deadline = time.monotonic() + policy.timeout_s
    # Images are compressed already: ask for them as they are.
    client = httpx.Client(
        follow_redirects=False, headers={"Accept-Encoding": "identity"}, verify=_TLS
    )
    watchdog = threading.Timer(policy.timeout_s, client.close)  # the one deadline
    watchdog.daemon = True
    watchdog.start()
    try:
        for _ in range(MAX_REDIRECTS + 1):
            address = check_url(url, policy.hosts)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SourceImageError(TOO_SLOW)
            target, headers, extensions = _pinned(url, address)
            try:
                with client.stream(
                    "GET", target, headers=headers, extensions=extensions, timeout=remaining
                ) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise SourceImageError(
                            f"the image server answered HTTP {response.status_code}"
                        )
                    data = _read_limited(response, policy.max_bytes, deadline)
            except (httpx.TimeoutException, RuntimeError) as exc:  # RuntimeError: closed client
                raise SourceImageError(TOO_SLOW) from exc
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline:
                    raise SourceImageError(TOO_SLOW) from exc
                raise SourceImageError(f"the image could not be downloaded: {exc}") from exc
            return _decode(url, data, policy.max_pixels)
        raise SourceImageError(f"more than {MAX_REDIRECTS} redirects")
    finally:
        watchdog.cancel()
        client.close()


def split_url(url: str) -> SplitResult | None:
    """``url`` split into its parts if it can be sent at all, else ``None``.

    Refused: over ``MAX_URL_LENGTH``, control characters, what UTF-8 cannot
    hold (a lone surrogate), a port that is no port (99999, -1, letters), a
    bracket left open. The scheme is the caller's to check.
    """
    if len(url) > MAX_URL_LENGTH or not url.isprintable():
        return None
    try:
        url.encode("utf-8")
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it is the check
    except (ValueError, UnicodeEncodeError):
        return None
    return parts


def check_url(url: str, hosts: tuple[str, ...]) -> str | None:
    """Raise ``SourceImageError`` unless ``url`` is http(s) on an allowed, safe host.

    Returns the public address the host's name resolved to, the one to
    connect to; ``None`` when the URL names its host by address or is
    ``localhost`` (listed explicitly: there is nothing to resolve twice).
    """
    parts = split_url(url)
    if parts is None:
        raise SourceImageError("image_url is not a usable URL")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceImageError("image_url must be an http or https URL")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    listed = [entry for entry in hosts if _entry_matches(entry, host, port)]
    if not listed:
        raise SourceImageError(f"images from {host} are not accepted here")
    if host == "localhost" or _is_ip(host):
        return None  # listed explicitly by address: the operator meant it
    try:
        answers = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except OSError as exc:
        raise SourceImageError(f"cannot resolve {host}") from exc
    if not answers:
        raise SourceImageError(f"cannot resolve {host}")
    for address in answers:
        ip = ipaddress.ip_address(str(address).split("%")[0])
        if not ip.is_global:
            raise SourceImageError(f"{host} resolves to a non-public address ({ip})")
    return str(answers[0])


def _pinned(url: str, address: str | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` aimed at ``address``, with the Host header and TLS name of the original."""
    if address is None:
        return url, {}, {}
    parts = urlsplit(url)
    ip = ipaddress.ip_address(address)
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    port = f":{parts.port}" if parts.port else ""
    target = parts._replace(netloc=f"{literal}{port}").geturl()
    host = str(parts.hostname)
    return target, {"Host": f"{host}{port}"}, {"sni_hostname": host}


def _entry_matches(entry: str, host: str, port: int) -> bool:
    if entry.startswith("["):  # [v6]:port
        name, _, entry_port = entry[1:].partition("]")
        entry_port = entry_port.lstrip(":")
    elif entry.count(":") == 1:
        name, entry_port = entry.split(":")
    else:
        name, entry_port = entry, ""
    return name == host and (not entry_port or int(entry_port) == port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _read_limited(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    """The body, decompressed as it arrives and refused the moment it passes ``max_bytes``."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise SourceImageError(f"the image is larger than {max_bytes:,} bytes")
    decoder = _decoder(response.headers.get("content-encoding", ""))
    body = bytearray()
    for chunk in response.iter_raw():
        if decoder is not None:
            # At most one byte past the limit comes out, whatever the chunk inflates to.
            chunk = decoder.decompress(chunk, max_bytes + 1 - len(body))
        body += chunk
        if len(body) > max_bytes:
            raise SourceImageError(f"the image is larger than {max_bytes:,} bytes")
        if time.monotonic() > deadline:
            raise SourceImageError(TOO_SLOW)
    if decoder is not None:
        body += decoder.flush()
        if len(body) > max_bytes:
            raise SourceImageError(f"the image is larger than {max_bytes:,} bytes")
    return bytes(body)


def _decoder(content_encoding: str) -> Any:
    """A zlib decompressor for the response's one encoding, ``None`` for none."""
    layers = [
        layer.strip().lower()
        for layer in content_encoding.split(",")
        if layer.strip() and layer.strip().lower() != "identity"
    ]
    if not layers:
        return None
    if len(layers) > 1:
        raise SourceImageError("the image server sent its answer compressed more than once")
    if layers[0] not in WINDOW_BITS:
        raise SourceImageError(f"the image server sent an encoding we do not read ({layers[0]})")
    return zlib.decompressobj(WINDOW_BITS[layers[0]])


def _decode(url: str, data: bytes, max_pixels: int) -> SourceImage:
    try:
        with _DECODES:
            checked = check_image(data, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise SourceImageError(f"the image is too large: {exc}") from exc
    except ImageError as exc:
        raise SourceImageError(f"not a usable image: {exc}") from exc
    return SourceImage(url, data, checked.format, checked.width, checked.height, checked.small)
