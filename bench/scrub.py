"""The log scrubber: the gram index (rotator/logs.py) against the replace loop it superseded, in one process.

The old scrubber (copied below as `ReplaceLoop`, as it was in commit 895c993) replaced each registered value where it
appeared whole: one substring search per registered secret per text, and no encoded forms or pieces. The new one
looks a text's 6-character grams up in one index (every 7th or every 3rd position), whatever the number of secrets.

For 10, 100, 1,000 and 4,096 registered 32-character passwords, each scrubber cleans the same texts, rounds
alternating between the two (to share the machine's noise): a log line with no secret (150 characters), an error
message holding one secret percent-encoded (old: not redacted; new: redacted), and a 3 KB traceback. Median of the
rounds, microseconds per call ("kept": the secrets the bounded index still holds). Then the cost of registering a
secret, and the memory of the index (tracemalloc) at its bound, with 32- and with 4096-character secrets.

Usage: python bench/scrub.py [--rounds 7] [--calls 2000]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import string
import sys
import threading
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotator.logs import MAX_INDEX_ENTRIES, _SecretRegistry  # noqa: E402

ALPHABET = string.ascii_letters + string.digits + "!#$%&()*+,-.;<=>?[]^_`{|}~"


class ReplaceLoop:
    """The scrubber before the gram index, verbatim in substance."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            for value in values:
                if len(value) < 6:
                    continue
                self._values[value] = None
                self._values.move_to_end(value)
            while len(self._values) > 8192:
                self._values.popitem(last=False)

    def scrub(self, text: str) -> str:
        with self._lock:
            values = list(self._values)
        for value in values:
            if value in text:
                text = text.replace(value, "[REDACTED]")
        return text


def password(length: int = 32) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def per_call(scrub: Callable[[str], str], text: str, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        scrub(text)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    line = (
        '{"event": "step finished", "plan": "orders-db", "run_id": "3f2a9c1b7d4e4c0f9a", "step": "test", '
        '"seconds": 0.0123, "level": "info", "timestamp": "2025-01-01T02:00:00Z"}'
    )[:150]
    frames = "".join(
        f'  File "/srv/rotator/plugins/rotation/http_transport.py", line {n}, in request\n    response = s.get(url)\n'
        for n in range(30)
    )
    heading = f"{'secrets':>8} {'kept':>5} {'layout':>6} {'text':>26} {'replace loop us':>16} {'gram index us':>14}"
    print(f"{heading} {'ratio':>6}")
    for count in (10, 100, 1000, 4096):
        values = [password() for _ in range(count)]
        old, new = ReplaceLoop(), _SecretRegistry()
        old.add(values)
        new.add(values)
        echoed = f"vendor refused the key {quote(values[-1], safe='')}: invalid api_key (code 401)"
        traceback = f"Traceback (most recent call last):\n{frames}ConnectionError: cannot reach api.example"[:3000]
        for name, text in (("line, no secret", line), ("error, secret encoded", echoed), ("3 KB traceback", traceback)):
            calls = max(50, args.calls // (10 if len(text) > 1000 or count >= 1000 else 1))
            timings: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                timings["old"].append(per_call(old.scrub, text, calls))
                timings["new"].append(per_call(new.scrub, text, calls))
            before, after = statistics.median(timings["old"]), statistics.median(timings["new"])
            label = f"{name} ({len(text)})"
            print(
                f"{count:>8} {len(new):>5} {new.layout:>6} {label:>26} {before:>16.2f} {after:>14.2f} "
                f"{after / before:>6.2f}"
            )
        assert "[REDACTED]" in new.scrub(echoed) and "[REDACTED]" not in old.scrub(echoed)

    registry = _SecretRegistry()
    batch = [password() for _ in range(1000)]  # fewer than the bound keeps: the second pass finds them all
    start = time.perf_counter()
    for value in batch:
        registry.add([value])
    print(f"\nregistering a 32-character secret: {(time.perf_counter() - start) / len(batch) * 1e6:.1f} us")
    start = time.perf_counter()
    for value in batch:
        registry.add([value])
    print(f"registering it again (already known): {(time.perf_counter() - start) / len(batch) * 1e6:.2f} us")

    for label, length, count in (("4,096 secrets of 32 characters", 32, 4096), ("4,096-character secrets", 4096, 100)):
        values = [password(length) for _ in range(count)]
        tracemalloc.start()
        registry = _SecretRegistry()
        registry.add(values)
        used, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"memory, {label}: {used / 1e6:.1f} MB for {len(registry)} secrets kept, "
            f"{registry.index_entries:,} index entries (bound {MAX_INDEX_ENTRIES:,})"
        )


if __name__ == "__main__":
    main()
