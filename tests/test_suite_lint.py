"""The suite's own lint: no test races the clock. A wall-clock read (`time.time()`,
`time.monotonic()`, `time.perf_counter()`) or a bare `time.sleep(` in tests/ fails here, named
by file:line, unless its line says why it is no race (`# clock: ...`, `# sleep: ...`).

Waiting for the other side goes through tests/waiting.py's `wait_until` (the one allowed
sleep); a speed bound belongs to a benchmark in bench/. Code inside strings (the snippets run
as subprocesses) and comments are not calls of this process and are not read."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ALLOWED_FILES = {TESTS / "waiting.py", TESTS / "mutations.py"}  # the latter: times it reports
CLOCKS = {"time", "monotonic", "perf_counter", "monotonic_ns", "perf_counter_ns", "time_ns"}
MARKERS = {"sleep": "# sleep:", "clock": "# clock:"}


def races(source: str) -> list[tuple[int, str]]:
    """(line, what) of each `time.sleep(` and wall-clock read in `source` not marked as why."""
    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type in (tokenize.NAME, tokenize.OP)
    ]
    lines = source.splitlines()
    found = []
    for first, dot, name, paren in zip(tokens, tokens[1:], tokens[2:], tokens[3:], strict=False):
        if (first.string, dot.string, paren.string) != ("time", ".", "("):
            continue
        kind = "sleep" if name.string == "sleep" else "clock" if name.string in CLOCKS else None
        line = name.start[0]
        if kind and MARKERS[kind] not in lines[line - 1]:
            found.append((line, f"time.{name.string}("))
    return found


def test_races_finds_calls_not_strings_or_marked_lines() -> None:
    source = (
        "import time\n"
        "started = time.monotonic()\n"
        "time.sleep(1)\n"
        "time.sleep(2)  # sleep: a slow server on purpose\n"
        "code = 'time.sleep(600)'  # a subprocess's\n"
        "# time.perf_counter() in a comment\n"
        "assert time.perf_counter() - started < 0.5\n"
    )
    assert races(source) == [(2, "time.monotonic("), (3, "time.sleep("), (7, "time.perf_counter(")]


def test_no_test_races_the_clock() -> None:
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}: {what}"
        for path in sorted(TESTS.rglob("*.py"))
        if path not in ALLOWED_FILES
        for line, what in races(path.read_text())
    ]
    assert found == [], (
        "wall-clock reads or bare sleeps in the suite (wait with tests/waiting.py's wait_until, "
        "count events, inject a clock, or say why on the line with '# clock:' / '# sleep:'):\n"
        + "\n".join(found)
    )


def test_every_mutation_of_the_mutation_check_still_applies() -> None:
    """tests/mutations.py's breakages are exact texts: one the code no longer holds (exactly
    once) is named here, in the fast suite, not only when the check runs."""
    from tests.mutations import MUTATIONS, verify_texts

    assert verify_texts(MUTATIONS) == []
