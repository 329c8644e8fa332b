"""Fetching an image a client named by URL, for the one provider that needs its bytes (Gemini takes
images inline or from its own file store, not from an arbitrary https URL).

A URL from a client is a request Goblin would make on its behalf, from inside its network, so the
fetch refuses anything but a public https server: the host's addresses are resolved once and every
one must be globally routable (no loopback, private, link-local, shared, multicast or reserved
address, IPv4-mapped ones included), then the connection goes to that checked address (the TLS
certificate is still verified against the host name), so a second DNS answer cannot point it
elsewhere. Redirects are followed by hand, each target checked the same way; the whole fetch has a
deadline, the body a size cap, and the answer must be an image type the providers take.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin

import httpx

from services.common.chat_content import IMAGE_MEDIA_TYPES, MAX_IMAGE_BYTES, ImageData
from services.common.errors import InvalidArgument

FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
USER_AGENT = "goblin-router image fetch"

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def public_address(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def checked_address(url: httpx.URL, where: str, resolver: Resolver) -> str:
    """The public address to connect to for ``url``; InvalidArgument for any other URL."""
    if url.scheme != "https" or not url.host:
        raise InvalidArgument(f"{where}: only https:// image URLs can be fetched")
    if url.userinfo:
        # Credentials in a URL would be sent on the client's behalf, from inside Goblin's network.
        raise InvalidArgument(f"{where}: an image URL with credentials is not fetched")
    try:
        addresses = [url.host] if _is_ip(url.host) else await resolver(url.host, url.port or 443)
    except OSError:
        raise InvalidArgument(f"{where}: the image's host {url.host[:100]!r} does not resolve") from None
    if not addresses:
        raise InvalidArgument(f"{where}: the image's host {url.host[:100]!r} does not resolve")
    if not all(public_address(a) for a in addresses):
        raise InvalidArgument(f"{where}: the image's host is not a public address; Goblin fetches only public images")
    return addresses[0]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def fetch_image(
    url: str,
    where: str = "image_url",
    *,
    timeout_s: float = FETCH_TIMEOUT_S,
    max_bytes: int = MAX_IMAGE_BYTES,
    resolver: Resolver = resolve,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ImageData:
    """The image at public https ``url``; InvalidArgument (the client's URL is the fault) when it is
    not public https, does not answer in time, is too large or is not an image."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(httpx.URL(url), where, max_bytes, resolver, transport, timeout_s)
    except TimeoutError:
        raise InvalidArgument(f"{where}: the image did not download within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise InvalidArgument(f"{where}: the image could not be downloaded ({type(exc).__name__})") from None


async def _fetch(
    url: httpx.URL,
    where: str,
    max_bytes: int,
    resolver: Resolver,
    transport: httpx.AsyncBaseTransport | None,
    timeout_s: float,
) -> ImageData:
    async with httpx.AsyncClient(
        transport=transport, follow_redirects=False, timeout=timeout_s, trust_env=False
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            address = await checked_address(url, where, resolver)
            request = client.build_request(
                "GET",
                url.copy_with(host=address),
                headers={"host": url.netloc.decode("ascii"), "user-agent": USER_AGENT, "accept": "image/*"},
                extensions={"sni_hostname": url.host},
            )
            response = await client.send(request, stream=True)
            try:
                if response.is_redirect and "location" in response.headers:
                    url = httpx.URL(urljoin(str(url), response.headers["location"]))
                    continue
                return await _read_image(response, where, max_bytes)
            finally:
                await response.aclose()
    raise InvalidArgument(f"{where}: more than {MAX_REDIRECTS} redirects")


async def _read_image(response: httpx.Response, where: str, max_bytes: int) -> ImageData:
    if response.status_code != 200:
        raise InvalidArgument(f"{where}: the image URL answered HTTP {response.status_code}")
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidArgument(f"{where}: the URL is not an image of type {', '.join(sorted(IMAGE_MEDIA_TYPES))}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InvalidArgument(f"{where}: the image is larger than {max_bytes // (1024 * 1024)} MiB")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data.extend(chunk)
        if len(data) > max_bytes:
            raise InvalidArgument(f"{where}: the image is larger than {max_bytes // (1024 * 1024)} MiB")
    if not data:
        raise InvalidArgument(f"{where}: the image is empty")
    return ImageData(media_type, bytes(data))
