"""Writes docs/openapi.json, the OpenAPI 3.1 document of the transcoded routes (``make docs``).

The document is built by ``badge_service.http.rest.openapi`` from the google.api.http
annotations, exactly as the server serves it at ``/openapi.json``; ``tests/test_contract.py``
compares it with the committed file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from badge_service.http.rest import openapi

ROOT = Path(__file__).resolve().parent.parent
OUT_DEFAULT = ROOT / "docs" / "openapi.json"


def main() -> None:
    """Entry point: write the document (or check that the committed one is current)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from the output"
    )
    args = parser.parse_args()
    text = openapi.render()
    current = args.out.read_text() if args.out.exists() else ""
    if args.check:
        if current != text:
            raise SystemExit(f"{args.out} is stale: run make docs")
        return
    if current != text:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
