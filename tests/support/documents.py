"""Document files built in tests: a real PDF with a text layer, and one that is broken."""

from __future__ import annotations

from pathlib import Path

# A PDF header, then an object that points at a missing page tree, then garbage.
CORRUPT_PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Pages 9 0 R >>\ntrash"


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A small real PDF: each text on its own page, in Helvetica, extractable by pypdf."""
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(width=300, height=200)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode())
        page.replace_contents(ContentStream(stream, writer))
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    with path.open("wb") as fh:
        writer.write(fh)
    return path
