"""Document parsers on real files made in the test: text, Markdown, HTML and PDFs written byte by byte,
and the hostile inputs an upload endpoint sees."""

from __future__ import annotations

import io
import random
import time

import pytest
from pypdf import PdfReader, PdfWriter

from services.common.errors import InvalidArgument
from services.rag.ingest import (
    APPLICATION_PDF,
    MAX_DOCUMENT_BYTES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    ParsedDocument,
    detect_type,
    parse_document,
    parse_text,
)
from services.rag.ingest.html import MAX_HTML_DEPTH

pytestmark = pytest.mark.unit


def make_pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """A valid PDF with one text line per entry of each page (Helvetica), written without a library."""
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, filled in once the page numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    page_numbers = []
    for lines in pages:
        commands = [b"BT /F1 12 Tf 14 TL 72 740 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            commands.append(b"(" + escaped.encode("cp1252") + b") Tj T*")
        commands.append(b"ET")
        stream = b"\n".join(commands)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content_number = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % content_number
        )
        page_numbers.append(len(objects))
    kids = b" ".join(b"%d 0 R" % number for number in page_numbers)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_numbers))
    info = b""
    if title is not None:
        objects.append(b"<< /Title (%s) >>" % title.encode("cp1252"))
        info = b" /Info %d 0 R" % len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref))
    return out.getvalue()


def encrypt(pdf: bytes, *, user_password: str, owner_password: str = "owner") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


TWO_PAGES = [
    ["Goblin field manual", "Goblins keep their treasure in deep caves.", "They count it every night."],
    ["Chapter two covers the care of lanterns.", "A lantern needs oil and a wick."],
]


def refused(call, *args, **kwargs) -> str:
    """The message of the InvalidArgument ``call`` raises (any other outcome fails the test)."""
    with pytest.raises(InvalidArgument) as caught:
        call(*args, **kwargs)
    return caught.value.message


# --- each type parses, with the right title and heading paths --------------------------------------


def test_plain_text_paragraphs_split_on_blank_lines_and_titled_by_the_first_line() -> None:
    text = "Release notes\r\n\r\nThe  first\tparagraph\nhas two lines.   \n\n\n\n  Second \x07paragraph.\n"

    document = parse_document(text.encode(), filename="notes.txt")

    assert document.content_type == TEXT_PLAIN
    assert document.title == "Release notes"
    assert len(document.sections) == 1
    assert document.sections[0].heading_path == ()
    assert document.sections[0].text == "Release notes\n\nThe  first    paragraph\nhas two lines.\n\nSecond paragraph."


def test_plain_text_whose_first_line_is_a_paragraph_is_titled_by_the_file_name() -> None:
    text = "word " * 100

    assert parse_text(text, filename="docs/field_guide.txt").title == "field guide"


def test_markdown_headings_become_heading_paths_and_code_blocks_stay() -> None:
    markdown = """# Goblin

Goblin is a *self-hosted* assistant, see [the docs](https://example.com/docs).

## Install

### On Linux

Run `pip install goblin`, then:

```bash
goblin up
  --port 8443
```

- first item
- second item

| flag | meaning |
| --- | --- |
| `-v` | verbose |

## Use

Ask it things &amp; read ![a diagram](d.png) the answers.
"""
    document = parse_document(markdown.encode(), filename="README.md")

    assert document.content_type == TEXT_MARKDOWN
    assert document.title == "Goblin"
    paths = [section.heading_path for section in document.sections]
    assert paths == [("Goblin",), ("Goblin", "Install", "On Linux"), ("Goblin", "Use")]
    intro, linux, use = (section.text for section in document.sections)
    assert intro == "Goblin is a self-hosted assistant, see the docs."
    assert linux.split("\n\n") == [
        "Run pip install goblin, then:",
        "goblin up\n  --port 8443",
        "- first item",
        "- second item",
        "flag | meaning\n-v | verbose",
    ]
    assert use == "Ask it things & read a diagram the answers."


def test_markdown_without_a_level_one_heading_is_titled_by_its_first_heading() -> None:
    document = parse_text("Some intro.\n\n## Setup\n\nText.\n", filename="x.md")

    assert document.title == "Setup"
    assert [s.heading_path for s in document.sections] == [(), ("Setup",)]


def test_html_keeps_headings_paragraphs_lists_and_pre_and_drops_scripts_navigation_and_footers() -> None:
    page = """<!DOCTYPE html><html><head><title>The  Goblin Guide</title>
<style>body { color: red }</style><script>var secret = "not text";</script></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Guide</h1><p>Welcome to the <b>guide</b>.</p>
<h2>Install</h2><h3>On Linux</h3>
<ul><li>Download it</li><li>Run <code>goblin up</code></li></ul>
<pre>goblin up
    --port 8443</pre>
<h2>Use</h2><div>Ask <span>anything</span>.<div>Nested block.</div></div>
<footer>Copyright goblins</footer><script>track()</script></body></html>"""

    document = parse_document(page.encode(), filename="guide.html")

    assert document.content_type == TEXT_HTML
    assert document.title == "The Goblin Guide"
    assert [(s.heading_path, s.text) for s in document.sections] == [
        (("Guide",), "Welcome to the guide."),
        (("Guide", "Install", "On Linux"), "- Download it\n\n- Run goblin up\n\ngoblin up\n    --port 8443"),
        (("Guide", "Use"), "Ask anything.\n\nNested block."),
    ]
    everything = " ".join(s.text for s in document.sections)
    for dropped in ("Home", "secret", "color", "Copyright", "track"):
        assert dropped not in everything


def test_html_without_a_title_is_titled_by_its_first_h1() -> None:
    assert parse_text("<h2>Intro</h2><p>x</p><h1>Main</h1><p>y</p>", content_type="text/html").title == "Main"


def test_a_real_multi_page_pdf_parses_with_its_metadata_title_and_every_page() -> None:
    document = parse_document(make_pdf(TWO_PAGES, title="The Field Manual"), filename="manual.pdf")

    assert document.content_type == APPLICATION_PDF
    assert document.title == "The Field Manual"
    assert [s.heading_path for s in document.sections] == [()]
    text = document.sections[0].text
    for line in TWO_PAGES[0] + TWO_PAGES[1]:
        assert line in text
    assert text.index("deep caves") < text.index("lanterns")


def test_a_pdf_without_a_metadata_title_is_titled_by_its_first_line() -> None:
    assert parse_document(make_pdf(TWO_PAGES), filename="m.pdf").title == "Goblin field manual"


def test_a_pdf_encrypted_only_against_changes_opens() -> None:
    # An empty user password: readers open it without asking, so its text can be indexed.
    document = parse_document(encrypt(make_pdf(TWO_PAGES), user_password=""), filename="m.pdf")

    assert "deep caves" in document.sections[0].text


# --- type detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "expected"),
    [
        ("a.bin", "text/markdown; charset=utf-8", b"x", TEXT_MARKDOWN),
        ("a.txt", "application/xhtml+xml", b"x", TEXT_HTML),
        ("a.md", "application/octet-stream", b"x", TEXT_MARKDOWN),
        ("A.HTM", "", b"x", TEXT_HTML),
        ("notes.markdown", "", b"x", TEXT_MARKDOWN),
        ("", "", b"%PDF-1.7\n", APPLICATION_PDF),
        ("upload", "", b"\xef\xbb\xbf  <!-- c --> <!DOCTYPE html><html>", TEXT_HTML),
        ("README", "", b"<p>not a page</p>", TEXT_PLAIN),
    ],
)
def test_type_comes_from_the_content_type_then_the_extension_then_the_content(
    filename: str, content_type: str, head: bytes, expected: str
) -> None:
    assert detect_type(head, filename=filename, content_type=content_type) == expected


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("setup.exe", ""), ("report.docx", ""), ("x.txt", "application/vnd.ms-excel"), ("x", "image/png")],
)
def test_unsupported_types_are_refused_naming_the_supported_ones(filename: str, content_type: str) -> None:
    message = refused(parse_document, b"MZ\x90\x00 hello", filename=filename, content_type=content_type)

    assert "unsupported" in message
    assert ".pdf" in message or "application/pdf" in message


# --- hostile inputs: InvalidArgument, quickly, and never another exception ------------------------------


def test_not_a_pdf_named_pdf() -> None:
    assert "not a PDF" in refused(parse_document, b"Hello, I am text.", filename="fake.pdf")


def test_truncated_pdfs_are_refused_or_parsed_but_never_crash() -> None:
    pdf = make_pdf(TWO_PAGES, title="T")
    for length in (len(pdf) // 4, len(pdf) // 2, len(pdf) - 40):
        try:
            document = parse_document(pdf[:length], filename="t.pdf")
        except InvalidArgument as error:
            assert "PDF" in error.message
        else:
            assert isinstance(document, ParsedDocument)
    assert "PDF" in refused(parse_document, pdf[:200], filename="t.pdf")


def test_corrupted_pdfs_never_raise_anything_but_invalid_argument() -> None:
    pdf = make_pdf(TWO_PAGES, title="T")
    chance = random.Random(13)
    for _ in range(60):
        damaged = bytearray(pdf)
        for _ in range(chance.randint(1, 40)):
            damaged[chance.randrange(8, len(damaged))] = chance.randrange(256)
        try:
            parse_document(bytes(damaged), filename="d.pdf")
        except InvalidArgument:
            pass


def test_a_password_protected_pdf_is_refused() -> None:
    message = refused(parse_document, encrypt(make_pdf(TWO_PAGES), user_password="s3cret"), filename="x.pdf")

    assert "encrypted" in message


def test_a_pdf_without_text_is_refused() -> None:
    assert "no extractable text" in refused(parse_document, make_pdf([[], []]), filename="scan.pdf")


def test_binary_junk_named_txt_is_refused() -> None:
    junk = random.Random(7).randbytes(4096)

    assert "binary" in refused(parse_document, junk, filename="notes.txt")


def test_text_that_is_not_utf8_is_refused() -> None:
    assert "UTF-8" in refused(parse_document, "Café crème".encode("latin-1"), filename="menu.txt")


def test_a_byte_order_mark_is_accepted() -> None:
    assert parse_document("\ufeffHello".encode(), filename="a.txt").sections[0].text == "Hello"


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  ", "\u00a0\u2028 \ufeff".encode()])
@pytest.mark.parametrize("filename", ["a.txt", "a.md", "a.html", "a.pdf", "noext"])
def test_empty_and_whitespace_only_documents_are_refused(content: bytes, filename: str) -> None:
    refused(parse_document, content, filename=filename)


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        ("", "a.txt"),
        ("  \n ", "a.md"),
        ("<html><script>x()</script><p> </p></html>", "a.html"),
        ("# \n\n```\n```", "a.md"),
    ],
)
def test_text_without_content_is_refused(text: str, filename: str) -> None:
    assert "empty" in refused(parse_text, text, filename=filename)


def test_nul_characters_in_text_are_refused() -> None:
    assert "NUL" in refused(parse_text, "abc\x00def", filename="a.txt")


def test_a_pdf_handed_over_as_text_is_refused() -> None:
    assert "file" in refused(parse_text, "%PDF-1.4 ...", filename="a.pdf")


def test_control_characters_are_stripped_and_newlines_unified() -> None:
    document = parse_text("a\x1b[31mred\x1b[0m\u0085b\rc\x7f\u009bd", filename="a.txt")

    assert document.sections[0].text == "a[31mred[0m\nb\ncd"


def test_an_11_mib_document_is_refused_naming_the_limit() -> None:
    big = b"word " * (11 * 2**20 // 5)
    started = time.monotonic()

    message = refused(parse_document, big, filename="big.txt")

    assert str(MAX_DOCUMENT_BYTES) in message and "10 MiB" in message
    assert time.monotonic() - started < 1
    refused(parse_text, big.decode(), filename="big.md")


def test_html_with_50k_nested_divs_is_refused_quickly() -> None:
    page = "<html><body>" + "<div>" * 50_000 + "deep" + "</div>" * 50_000 + "</body></html>"
    started = time.monotonic()

    message = refused(parse_document, page.encode(), filename="deep.html")

    assert str(MAX_HTML_DEPTH) in message
    assert time.monotonic() - started < 2


def test_html_nested_just_under_the_limit_parses() -> None:
    depth = MAX_HTML_DEPTH - 10
    page = "<div>" * depth + "deep" + "</div>" * depth

    assert parse_text(page, filename="a.html").sections[0].text == "deep"


@pytest.mark.parametrize("line", ["[" * 100_000, "*a" * 50_000, "[a](" * 25_000, "<" * 100_000, "word " * 20_000])
def test_a_markdown_file_of_one_100k_character_line_parses_quickly(line: str) -> None:
    # markdown-it-py's own inline parser takes seconds on such lines; the parse must stay linear.
    started = time.monotonic()

    document = parse_document(line.encode(), filename="line.md")

    assert time.monotonic() - started < 3
    assert len(document.sections[0].text) > 50_000


@pytest.mark.parametrize("markup", ["> " * 50_000 + "x", "- " * 50_000 + "x", "_" * 100_000])
def test_deeply_nested_markdown_is_handled_quickly(markup: str) -> None:
    started = time.monotonic()
    try:
        parse_text(markup, filename="x.md")
    except InvalidArgument:
        pass
    assert time.monotonic() - started < 3
