"""The mutation check: deliberate breakages of the most important logic, each of which some test
must catch. `python -m tests.mutations` (or `make mutation-check`); see tests/README.md.

Each mutation is an exact (file, old text, new text) replacement, applied one at a time to a
copy of the project (never the working tree), where it runs the few fast tests named for it.
The check fails (exit 1) if the tests do not pass on the unmutated copy, if a mutation's old
text is not found exactly once (the list cannot rot silently), or if a mutation leaves all its
tests passing ("survived").

The copy is imported, not the repo: pytest runs with the copy as its working directory and
root (pyproject's `pythonpath = ["."]` puts it first on sys.path, ahead of the .venv's .pth to
the repo), and PYTHONPATH names it for the subprocesses the tests start. The check verifies
that before it starts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the promise it breaks, in a few words
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "completeness-count",
        "a read with fewer records than the API's total passes",
        "ingestion/moovitamix_source/__init__.py",
        "if self.total is not None and self.received != self.total:",
        "if self.total is not None and self.received > self.total:",
        ("tests/ingestion/test_records.py",),
    ),
    Mutation(
        "completeness-check-ignored",
        "the read's problems are not raised",
        "ingestion/moovitamix_source/__init__.py",
        "if problems := read.check.problems():",
        "if problems := []:",
        (
            "tests/ingestion/test_pipeline.py"
            "::test_a_read_that_does_not_add_up_is_read_again_then_fails",
        ),
    ),
    Mutation(
        "scd2-no-retirement",
        "records deleted by the API stay current in raw",
        "ingestion/moovitamix_source/__init__.py",
        "create_table_variant=True\n            )\n        yield resource",
        # a merge key on the endpoint's own table: dlt's scd2 then retires only the keys the
        # extract holds (its incremental mode), so a record the API deleted stays current
        "create_table_variant=True\n            )\n"
        "        resource.apply_hints(merge_key=endpoint.key)\n        yield resource",
        (
            "tests/ingestion/test_pipeline.py"
            "::test_day_two_adds_versions_and_retires_deleted_records",
        ),
    ),
    Mutation(
        "heard-tracks-recommended",
        "tracks a user heard are not excluded from their list",
        "ml/topk.py",
        "skip = in_rows(heard, np.arange(len(candidates)), candidates)",
        "skip = np.zeros(candidates.shape, dtype=bool)",
        ("tests/ml/test_topk.py", "tests/ml/test_lists.py"),
    ),
    Mutation(
        "publish-outside-transaction",
        "the swap and the parts commit one by one",
        "moovitamix/publication.py",
        "with connect(url, autocommit=True) as conn, conn.transaction():",
        "with connect(url, autocommit=True) as conn:",
        ("tests/moovitamix/test_publication.py",),
    ),
    Mutation(
        "publish-any-candidate",
        "a candidate that is not a complete build is published",
        "moovitamix/publication.py",
        "    if state != UNPUBLISHED:\n",
        "    if state is None:\n",
        ("tests/moovitamix/test_publication.py",),
    ),
    Mutation(
        "analyst-reads-raw",
        "the analyst role is granted raw",
        "moovitamix/roles.sql",
        "grant usage on schema raw to mvx_transformer;\n"
        "alter default privileges for role mvx_loader in schema raw\n"
        "grant select on tables to mvx_transformer;\n"
        "grant select on all tables in schema raw to mvx_transformer;",
        "grant usage on schema raw to mvx_transformer, mvx_analyst;\n"
        "alter default privileges for role mvx_loader in schema raw\n"
        "grant select on tables to mvx_transformer, mvx_analyst;\n"
        "grant select on all tables in schema raw to mvx_transformer, mvx_analyst;",
        (
            "tests/moovitamix/test_roles.py"
            "::test_analyst_cannot_read_raw_pii_or_staging_nor_write_anything",
        ),
    ),
    Mutation(
        "login-wears-the-bootstrap-user",
        "a step connects as the warehouse user and only sets its role",
        "moovitamix/logins.py",
        'base = replace(self.server, user=login, password=self.passwords.get(login, ""))',
        "base = self.server",
        (
            "tests/moovitamix/test_logins.py"
            "::test_no_login_breaks_out_of_its_role[embedded-mvx_analyst]",
        ),
    ),
)


def environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale bytecode of a mutated file
    return env


def pytest(copy: Path, tests: tuple[str, ...], basetemp: Path) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
               "--basetemp", str(basetemp), "--no-header", "-o", "addopts=--strict-markers",
               *tests]  # fmt: skip
    done = subprocess.run(
        command, cwd=copy, env=environment(copy), capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout[-2000:] + done.stderr[-2000:]


def check_imports_come_from(copy: Path) -> None:
    """The copy's packages, not the repo's, are what its tests import."""
    probe = "import ingestion, ml, moovitamix, tests; print(moovitamix.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=copy, env=environment(copy), capture_output=True,
        text=True, timeout=120, check=True,
    )  # fmt: skip
    where = Path(done.stdout.strip()).resolve()
    if not where.is_relative_to(copy.resolve()):
        sys.exit(f"mutation check: the copy imports moovitamix from {where}, not from {copy}")


def verify_texts(mutations: tuple[Mutation, ...]) -> list[str]:
    problems = []
    for m in mutations:
        count = (REPO / m.file).read_text().count(m.old)
        if count != 1:
            problems.append(f"{m.name}: its old text occurs {count} times in {m.file} (not once)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutations (default: all)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print how each mutation's tests failed"
    )
    args = parser.parse_args(argv)
    chosen = tuple(m for m in MUTATIONS if not args.names or m.name in args.names)
    if unknown := set(args.names) - {m.name for m in MUTATIONS}:
        parser.error(f"no such mutation: {', '.join(sorted(unknown))}")
    if problems := verify_texts(chosen):
        print("mutation check: the list has rotted:\n  " + "\n  ".join(problems))
        return 1

    from tests.hermetic import copy_project

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="moovitamix-mutations-") as tmp:
        work = Path(tmp)
        copy = copy_project(work / "moovitamix")
        check_imports_come_from(copy)
        all_tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        t0 = time.monotonic()
        code, output = pytest(copy, all_tests, work / "pt-baseline")
        print(f"unmutated: {len(all_tests)} test selection(s), rc {code}, "
              f"{time.monotonic() - t0:.0f}s")  # fmt: skip
        if code != 0:
            print(output)
            print("mutation check: the tests fail without any mutation")
            return 1
        rows, survived, broken = [], [], []
        for m in chosen:
            path = copy / m.file
            original = path.read_text()
            path.write_text(original.replace(m.old, m.new, 1))
            t0 = time.monotonic()
            try:
                code, output = pytest(copy, m.tests, work / f"pt-{m.name}")
            finally:
                path.write_text(original)
            seconds = time.monotonic() - t0
            if args.verbose:
                print(f"--- {m.name} (rc {code}):\n{output}")
            if code == 0:
                verdict = "SURVIVED"
                survived.append(m.name)
            elif code in (1, 2):  # failed tests, or errors collecting them: caught
                verdict = "killed"
            else:  # 3 internal error, 4 usage (a test that no longer exists), 5 none collected
                verdict = f"ERROR rc {code}"
                broken.append((m.name, output))
            rows.append((m.name, ", ".join(t.removeprefix("tests/") for t in m.tests), verdict,
                         seconds))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\n{'mutation':<{width}}  {'verdict':<10} {'s':>5}  tests")
    for name, tests, verdict, seconds in rows:
        print(f"{name:<{width}}  {verdict:<10} {seconds:5.0f}  {tests}")
    print(f"\n{len(rows)} mutations in {time.monotonic() - start:.0f}s: "
          f"{len(rows) - len(survived) - len(broken)} killed, {len(survived)} survived, "
          f"{len(broken)} errors")  # fmt: skip
    for name, output in broken:
        print(f"\n--- {name}: pytest could not run its tests:\n{output}")
    if survived:
        by_name = {m.name: m for m in chosen}
        for name in survived:
            print(f"survived: {name} ({by_name[name].what}): no test caught it")
    return 1 if survived or broken else 0


if __name__ == "__main__":
    sys.exit(main())
