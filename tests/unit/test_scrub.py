"""The scrubber (rotator/logs.py): every registered secret is redacted in the forms a vendor or a library echoes it,
and any piece of 12 or more characters of those; standard-library logging goes through the same redaction.

The encodings are computed here with the standard library, independently of rotator.logs, so that a form the
scrubber forgot shows up as a failure rather than agreeing with itself.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import string
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

import pytest
import structlog

from rotator import logs
from rotator.logs import REDACTED, _SecretRegistry
from tests.secret_forms import ENCODINGS, b64_at, core, leaked, random_secret


@pytest.fixture
def registry() -> _SecretRegistry:
    return _SecretRegistry()


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_encoding_is_redacted_inside_a_message(registry: _SecretRegistry, encoding: str) -> None:
    value = random_secret()
    registry.add([value])
    text = f"vendor said: invalid credential <{ENCODINGS[encoding](value)}> for account 42"
    scrubbed = registry.scrub(text)
    assert REDACTED in scrubbed
    assert leaked(scrubbed, value) == [], scrubbed
    assert scrubbed.startswith("vendor said: invalid credential <") and scrubbed.endswith("> for account 42")


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_every_piece_of_12_characters_is_redacted_at_every_offset(encoding: str, layout: str) -> None:
    """The gram index looks a text up every 7th position (dense) or every 3rd (sparse, past DENSE_INDEX_ENTRIES):
    every 12-character piece of every form is found at each of the offsets that matter, in both layouts."""
    registry = _SecretRegistry(dense_index_entries=10**9 if layout == "dense" else 0)
    value = random_secret(30)
    registry.add([value])
    assert registry.layout == layout
    form = core(encoding, value)
    for start in range(len(form) - 11):
        piece = form[start : start + 12]
        for offset in range(7):
            text = "x" * offset + f" key {piece}... invalid"
            scrubbed = registry.scrub(text)
            assert piece not in scrubbed, (encoding, start, offset, scrubbed)


def test_the_index_turns_sparse_when_it_grows_and_still_finds_everything() -> None:
    registry = _SecretRegistry(dense_index_entries=5_000)
    values = [random_secret() for _ in range(60)]
    registry.add(values[:2])
    assert registry.layout == "dense"
    registry.add(values[2:])
    assert registry.layout == "sparse"
    for value in values:
        assert leaked(registry.scrub(f"<{quote_plus(value)}> <{b64_at(value, 'user:')}>"), value) == []


def test_a_non_ascii_secret_in_every_encoding(registry: _SecretRegistry) -> None:
    """UTF-8 and Latin-1 bytes differ (requests sends Basic credentials as Latin-1), and JSON writes \\u escapes."""
    value = "sk/Évé+x=9Qp&r<T>zü2!#$%^()" + random_secret(20)
    registry.add([value])
    for name, encode in ENCODINGS.items():
        assert leaked(registry.scrub(f"x {encode(value)} y"), value) == [], name


def test_pieces_shorter_than_12_and_unrelated_text_are_kept(registry: _SecretRegistry) -> None:
    value = random_secret()
    registry.add([value])
    assert registry.scrub(f"key {value[:11]}... invalid") == f"key {value[:11]}... invalid"
    ordinary = "rotation step finished plan=orders-db run=3f2a9c1b7d4e step=test seconds=0.0123 " * 20
    assert registry.scrub(ordinary) == ordinary


def test_short_secrets_are_replaced_only_whole_in_each_form(registry: _SecretRegistry) -> None:
    short = "p@ss/w0rd"  # 9 characters: too short for pieces, long enough to be scrubbed
    registry.add([short])
    for encoding in ("raw", "quote", "quote_plus", "json-slash-escaped", "base64", "html"):
        text = f"[{ENCODINGS[encoding](short)}]"
        assert registry.scrub(text) == f"[{REDACTED}]" if encoding != "json-slash-escaped" else f'["{REDACTED}"]'
    assert registry.scrub("p@ss/w0r and more") == "p@ss/w0r and more"
    registry.add(["five5"])  # under 6 characters: never scrubbed (it would mangle words)
    assert registry.scrub("five5 words") == "five5 words"


def test_a_secret_at_the_start_the_end_and_twice(registry: _SecretRegistry) -> None:
    value = random_secret()
    registry.add([value])
    assert registry.scrub(value) == REDACTED
    assert registry.scrub(f"{value}{value}") == REDACTED
    assert registry.scrub(f"{value} and {quote_plus(value)}") == f"{REDACTED} and {REDACTED}"


def test_many_secrets_and_a_long_one(registry: _SecretRegistry) -> None:
    values = [random_secret() for _ in range(300)]
    registry.add(values)
    long_value = "".join(secrets.choice(string.ascii_letters) for _ in range(4096))
    registry.add([long_value])
    text = " | ".join(quote(v, safe="") for v in values[::7]) + f" tail {long_value[1000:3000]} end"
    scrubbed = registry.scrub(text)
    assert all(leaked(scrubbed, v) == [] for v in values[::7])
    assert scrubbed.endswith(f"tail {REDACTED} end")


def test_memory_is_bounded_and_the_oldest_secrets_go_first() -> None:
    registry = _SecretRegistry(max_secrets=50, max_index_entries=100_000)
    values = [random_secret() for _ in range(120)]
    for value in values:
        registry.add([value])
    assert len(registry) == 50
    assert leaked(registry.scrub(values[-1]), values[-1]) == []
    assert registry.scrub(values[0]) == values[0]  # forgotten
    # Registering again makes a secret the most recent: it survives the next evictions.
    registry.add([values[80]])
    registry.add([random_secret() for _ in range(40)])
    assert registry.scrub(values[80]) == REDACTED

    by_entries = _SecretRegistry(max_secrets=10_000, max_index_entries=2_000)
    for _ in range(200):
        by_entries.add([random_secret()])
    assert by_entries.index_entries <= 2_000
    assert 0 < len(by_entries) < 200


def test_forgetting_a_secret_keeps_a_form_another_still_has() -> None:
    registry = _SecretRegistry(max_secrets=2)
    first = random_secret()
    second = quote(first, safe="")  # its raw form is the first's percent-encoded form
    registry.add([first, second])
    registry.add([random_secret()])  # forgets `first`
    assert registry.scrub(f"<{second}>") == f"<{REDACTED}>"


def test_scrub_while_another_thread_registers() -> None:
    """Readers take no lock: scrubbing stays right while another thread grows the index through its switch from
    the dense to the sparse layout (bounds high enough that nothing is forgotten)."""
    registry = _SecretRegistry(max_secrets=10**6, max_index_entries=10**7, dense_index_entries=20_000)
    value = random_secret()
    registry.add([value])
    stop = threading.Event()
    errors: list[BaseException] = []
    # made here: generated in the thread, under the scrubbing loop's hold on the GIL, they took 20-50 s
    batches = [[random_secret() for _ in range(10)] for _ in range(100)]

    def register() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                registry.add(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=register)
    thread.start()
    try:
        while thread.is_alive():
            assert registry.scrub(f"x {quote_plus(value)} y") == f"x {REDACTED} y"
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert registry.layout == "sparse" and len(registry) == 1001


def test_a_secret_registered_while_another_thread_indexes_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads register a secret each; the first to scrub indexes both (they wait together). While it is
    still indexing, the other thread's scrub must wait for it, not search the index without its own secret (the
    dry run of 20 plans showed a vendor's echo of one plan's key unredacted, once in ~15 runs)."""
    registry = _SecretRegistry()
    first, second = random_secret(), random_secret()
    registry.add([first])
    registry.add([second])
    indexing, release = threading.Event(), threading.Event()
    real_forms = logs.secret_forms

    def slow_forms(value: str) -> set[str]:
        if value == first:  # the indexing thread, holding both secrets, stops here until released
            indexing.set()
            assert release.wait(10)
        return real_forms(value)

    monkeypatch.setattr(logs, "secret_forms", slow_forms)
    indexer = threading.Thread(target=registry.scrub, args=("nothing secret here",))
    indexer.start()
    try:
        assert indexing.wait(10)
        threading.Timer(0.2, release.set).start()
        assert registry.scrub(f"key {second} invalid") == f"key {REDACTED} invalid"
        assert release.is_set()  # it did wait for the indexing thread
    finally:
        release.set()
        indexer.join()


# -- standard-library logging through the same formatter and redaction ------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure(json=True, level="debug", stream=stream)
    yield stream
    structlog.configure(**saved)
    root.handlers, root.level = handlers, level


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # every line must be JSON


def test_standard_library_logging_is_json_and_redacted(log_stream: io.StringIO) -> None:
    value = random_secret()
    logs.register_secret(value)
    logging.getLogger("urllib3.connectionpool").debug('"GET /v1/whoami?api_key=%s HTTP/1.1" 401', quote_plus(value))
    try:
        raise RuntimeError(f"vendor echoed {json.dumps(value)}")
    except RuntimeError:
        logging.getLogger("some.library").exception("call failed")
    lines = json_lines(log_stream)
    assert [line["level"] for line in lines] == ["debug", "error"]
    assert lines[0]["logger"] == "urllib3.connectionpool" and REDACTED in str(lines[0]["event"])
    assert "Traceback" in str(lines[1]["exception"]) and REDACTED in str(lines[1]["exception"])
    assert leaked(log_stream.getvalue(), value) == []


def test_an_apscheduler_job_failure_is_one_json_error_event(log_stream: io.StringIO) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    value = random_secret()
    logs.register_secret(value)
    done = threading.Event()

    def job() -> None:
        done.set()
        raise ConnectionError(f"journal unreachable: password={quote(value, safe='')}")

    scheduler = BackgroundScheduler(timezone="UTC")
    # An interval job (not a one-off): APScheduler removes a one-off after its run, which races its shutdown.
    scheduler.add_job(job, "interval", hours=1, next_run_time=datetime.now(UTC))
    scheduler.start()
    try:
        assert done.wait(10)
        deadline = time.monotonic() + 10
        while "journal unreachable" not in log_stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=True)
    errors = [line for line in json_lines(log_stream) if line["level"] == "error"]
    assert errors and str(errors[0]["logger"]).startswith("apscheduler")
    assert "ConnectionError" in str(errors[0]["exception"])
    assert leaked(log_stream.getvalue(), value) == []


def test_configure_keeps_one_root_handler(log_stream: io.StringIO) -> None:
    logs.configure(json=True, level="info", stream=log_stream)
    logs.configure(json=True, level="info", stream=log_stream)
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("x").debug("hidden at info")
    logging.getLogger("botocore.endpoint").info("shown")
    logs.configure(json=True, level="debug", stream=log_stream)
    logging.getLogger("botocore.endpoint").debug("request body in full")  # never below info
    assert [line["event"] for line in json_lines(log_stream)] == ["shown"]


def test_structlog_and_standard_library_lines_never_interleave(log_stream: io.StringIO) -> None:
    """Threads logging through both at once: every line is one whole JSON object (they share one lock)."""
    log = logs.get_logger("test")
    stdlib = logging.getLogger("urllib3.connectionpool")

    def chatter(index: int) -> None:
        for n in range(300):
            log.info("structlog line", thread=index, n=n)
            stdlib.info("stdlib line %s %s", index, n)

    threads = [threading.Thread(target=chatter, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = json_lines(log_stream)
    assert len(lines) == 4 * 300 * 2
