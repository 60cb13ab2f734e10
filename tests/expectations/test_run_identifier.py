"""GX's id of a run's validations: any of our run ids, whatever its random suffix."""

from datetime import UTC, datetime

from expectations.context import run_identifier


def test_a_run_id_that_reads_as_an_impossible_utc_offset_still_identifies_the_run() -> None:
    # without a run time GX parses "...Z-25ad1a" as a time 25 hours off UTC, and storing the
    # results fails; these suffixes are what moovitamix.run_context.new_run_id draws from
    before = datetime.now(UTC)
    for run_id in ("20261207T111950Z-25ad1a", "20261207T111950Z-a8c80d", "20261207T111950Z-99"):
        identifier = run_identifier(run_id)
        name, when = identifier.to_tuple()
        assert name == run_id
        assert datetime.strptime(when, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC) >= before
