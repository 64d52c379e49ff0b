"""Org A of the noisy-neighbour scenario: a closed loop of writes at the org's limits, run
beside the measured load of another org (see bench/run.py, ``_noisy_neighbour``).

A cycle of pre-serialized requests (e.g. CreateBadge of a badge at every limit, in an org at
its tag and custom field quotas; UpdateOrgMeta of all its tags) goes out on ``streams``
concurrent calls of one channel for ``duration`` seconds. A request with a placeholder gets a
fresh fixed-width counter there (a unique badge name), as bench/h2gen.py does. grpc.aio sends
the bytes as they are (no serializer), so the client costs little beside the server; unlike
h2gen it splits large bodies into HTTP/2 frames and follows flow control, which a badge of
90 KB needs.

Run as ``python -m bench.noisy SPEC.json``; prints one JSON object: calls OK and failed, the
unique (created) ones OK, and the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs the cycle for the spec's duration; the counts."""
    items = [
        (
            item["path"],
            base64.b64decode(item["body"]),
            item["placeholder"].encode() if item.get("placeholder") else None,
        )
        for item in spec["items"]
    ]
    cycle = itertools.cycle(items)
    counter = itertools.count()
    metadata = [("authorization", f"Bearer {spec['key']}")]
    limit = 64 * 1024 * 1024
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    counts = {"ok": 0, "failed": 0, "unique_ok": 0}
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{spec['port']}", options=options) as channel:
        calls = {path: channel.unary_unary(path) for path, _, _ in items}
        deadline = time.monotonic() + float(spec["duration"])

        async def loop() -> None:
            while time.monotonic() < deadline:
                path, body, placeholder = next(cycle)
                if placeholder is not None:
                    unique = b"%0*d" % (len(placeholder), next(counter))
                    body = body.replace(placeholder, unique)
                try:
                    await calls[path](body, metadata=metadata, timeout=60)
                except grpc.aio.AioRpcError as err:
                    counts["failed"] += 1
                    name = f"{err.code().name}: {err.details()}"[:200]
                    errors[name] = errors.get(name, 0) + 1
                else:
                    counts["ok"] += 1
                    counts["unique_ok"] += placeholder is not None

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(int(spec["streams"]))))
        elapsed = time.monotonic() - started
    return {**counts, "rps": counts["ok"] / elapsed if elapsed else 0.0, "errors": errors}


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m bench.noisy SPEC.json``."""
    p = argparse.ArgumentParser(description="org A of the noisy-neighbour scenario")
    p.add_argument("spec", type=Path)
    args = p.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    result = asyncio.run(drive(spec))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
