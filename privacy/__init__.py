"""Forgetting a user: erasure requests processed store by store, a salted suppression list that
keeps ingestion from storing them again, and the audit that proves it (README.md, "Forgetting a
user"; SECURITY.md)."""


class ErasureFailed(RuntimeError):
    """An erasure could not finish; the request stays pending and the next attempt resumes it."""
