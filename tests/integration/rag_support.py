"""What the rag integration and attack tests share: a real PDF made in memory, tenants and keys made
through the API, and direct looks into Chroma and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from goblin_tools.suite import Suite

PASSWORD = "a long enough password for rag"


def make_pdf(lines: list[str], title: str = "") -> bytes:
    """A one-page PDF with ``lines`` of text in Helvetica (a real file pypdf extracts text from)."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({escape(line)}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        "/Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        f"<< /Title ({escape(title)}) >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def api_key(client: httpx.Client, scopes: list[str]) -> str:
    """A new API key of the caller's (the admin's) tenant with these scopes."""
    reply = client.post("/auth/api-keys", json={"name": f"rag-{'-'.join(scopes)}", "scopes": scopes})
    assert reply.status_code == 201, reply.text
    return reply.json()["key"]


def other_tenant_token(client: httpx.Client) -> tuple[str, str]:
    """A user of a brand-new tenant, signed in: (tenant id, access token). ``client`` is the admin's."""
    tenant = f"ragt{uuid.uuid4().hex[:10]}"
    reply = client.post("/auth/tenants", json={"id": tenant, "name": tenant})
    assert reply.status_code == 201, reply.text
    email = f"rag-{uuid.uuid4().hex[:10]}@example.com"
    reply = client.post("/auth/register", json={"email": email, "password": PASSWORD, "tenant_id": tenant})
    assert reply.status_code == 201, reply.text
    reply = client.post("/auth/login", json={"email": email, "password": PASSWORD}, headers={"Authorization": ""})
    assert reply.status_code == 200, reply.text
    return tenant, reply.json()["access_token"]


def db_rows(suite: Suite, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(suite.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())
