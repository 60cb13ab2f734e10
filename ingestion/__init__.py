"""Ingestion (dlt): the MooVitamix API into schema raw; `python -m ingestion`, `run_ingestion()`."""

from moovitamix import exit_codes


class IngestionFailed(RuntimeError):
    """The run failed; the message is one line. `endpoint` names the endpoint at fault (None:
    the run as a whole), `stats` what was measured until then."""

    code = exit_codes.STEP_FAILED

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.stats: dict = {}


class IngestionAlreadyRunning(IngestionFailed):
    """Another ingestion holds the lock on this warehouse."""

    code = exit_codes.ALREADY_RUNNING
