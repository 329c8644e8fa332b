"""The image fetch a provider that needs bytes uses: public https only (every resolved address checked,
redirects too), connected to the checked address, a size cap, a deadline, image types only."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.common.errors import InvalidArgument
from services.router.providers.image_fetch import fetch_image, public_address

PUBLIC = "93.184.215.14"


def resolver(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("no such host")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        (PUBLIC, True),
        ("2606:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert public_address(address) is public


async def test_a_public_image_is_fetched_from_the_checked_address_with_the_host_name_kept() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"\x89PNG...", headers={"content-type": "image/png; charset=binary"})

    image = await fetch_image(
        "https://img.example.com/cat.png?size=2",
        resolver=resolver({"img.example.com": [PUBLIC]}),
        transport=httpx.MockTransport(handler),
    )
    assert (image.media_type, image.data) == ("image/png", b"\x89PNG...")
    request = seen[0]
    assert request.url.host == PUBLIC and request.url.path == "/cat.png" and request.url.query == b"size=2"
    assert request.headers["host"] == "img.example.com"
    assert request.extensions["sni_hostname"] == "img.example.com"  # TLS still checks the name


@pytest.mark.parametrize(
    ("url", "table", "match"),
    [
        ("http://img.example.com/cat.png", {"img.example.com": [PUBLIC]}, "only https"),
        ("https://127.0.0.1/cat.png", {}, "not a public address"),
        ("https://[::1]/cat.png", {}, "not a public address"),
        ("https://internal.example.com/x.png", {"internal.example.com": [PUBLIC, "10.0.0.5"]}, "not a public address"),
        ("https://nowhere.example.com/x.png", {}, "does not resolve"),
        ("https://user:pw@img.example.com/x.png", {"img.example.com": [PUBLIC]}, "credentials"),
    ],
)
async def test_non_public_or_non_https_urls_are_refused_before_any_connection(url, table, match) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no connection may be made")

    with pytest.raises(InvalidArgument, match=match):
        await fetch_image(url, resolver=resolver(table), transport=httpx.MockTransport(handler))


async def test_a_redirect_to_a_private_address_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "https://metadata.internal/latest"})

    table = {"img.example.com": [PUBLIC], "metadata.internal": ["169.254.169.254"]}
    with pytest.raises(InvalidArgument, match="not a public address"):
        await fetch_image(
            "https://img.example.com/a.png", resolver=resolver(table), transport=httpx.MockTransport(handler)
        )


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (httpx.Response(200, content=b"<html>", headers={"content-type": "text/html"}), "not an image"),
        (httpx.Response(404, content=b"", headers={"content-type": "image/png"}), "HTTP 404"),
        (httpx.Response(200, content=b"x" * 2048, headers={"content-type": "image/png"}), "larger than"),
        (httpx.Response(200, content=b"", headers={"content-type": "image/png"}), "empty"),
    ],
)
async def test_bad_answers_are_refused(response: httpx.Response, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        await fetch_image(
            "https://img.example.com/a.png",
            max_bytes=1024,
            resolver=resolver({"img.example.com": [PUBLIC]}),
            transport=httpx.MockTransport(lambda r: response),
        )


async def test_a_slow_server_hits_the_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    with pytest.raises(InvalidArgument, match="within 0.2 s"):
        await fetch_image(
            "https://img.example.com/a.png",
            timeout_s=0.2,
            resolver=resolver({"img.example.com": [PUBLIC]}),
            transport=httpx.MockTransport(slow),
        )
