"""Runs the 1EdTech Open Badges validator (openbadges 1.1.2) on one badge, a hosted assertion
URL or a baked image file, and prints its report's verdict as one JSON line. Run by
tests/test_validator.py with .venv-validator's Python, never imported by the suite.

The validator fetches every document over HTTP from the live server; the one thing it is
handed is the Open Badges 2.0 JSON-LD context (https://w3id.org/openbadges/v2), from the copy
the validator itself ships, so that the test needs no Internet access.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from openbadges import verify
from openbadges.verifier import utils
from openbadges.verifier.openbadges_context import (
    OPENBADGES_CONTEXT_V2_DICT,
    OPENBADGES_CONTEXT_V2_URI,
)

_load = utils.CachableDocumentLoader.__call__


def _offline_context(self: Any, url: str) -> Any:
    if url == OPENBADGES_CONTEXT_V2_URI:
        text = json.dumps(OPENBADGES_CONTEXT_V2_DICT)
        return {"contextUrl": None, "documentUrl": url, "document": text}
    return _load(self, url)


def main() -> None:
    """Verifies ``argv[1]`` (a URL, or a path to a baked PNG or SVG) for ``argv[2]``'s email."""
    utils.CachableDocumentLoader.__call__ = _offline_context
    subject, email = sys.argv[1], sys.argv[2]
    if subject.startswith(("http://", "https://")):
        result = verify(subject, recipient_profile={"email": email})
    else:
        with open(subject, "rb") as image:
            result = verify(image, recipient_profile={"email": email})
    report = result["report"]
    errors = [
        {"name": m.get("name"), "result": str(m.get("result"))[:500]}
        for m in report["messages"]
        if m.get("messageLevel") == "ERROR"
    ]
    print(json.dumps({"valid": report["valid"], "errors": errors}))


if __name__ == "__main__":
    main()
