"""The API's own settings: bearer tokens (SERVING_TOKENS), where the models are
(SERVING_ARTIFACTS_DIR), both from the environment over `.env`, and its background intervals."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from moovitamix.settings import PROJECT_ROOT, env_file_values

TOKENS_ENV = "SERVING_TOKENS"
ARTIFACTS_ENV = "SERVING_ARTIFACTS_DIR"  # where the API finds the models, if not ml's root


class ServingConfig(BaseModel, frozen=True):
    tokens: tuple[str, ...] = ()  # plain tokens or "sha256:<hex digest of the token>"
    poll_s: float = Field(5.0, gt=0)  # how often the published run is checked
    flush_s: float = Field(1.0, gt=0)  # impressions are written at least this often
    flush_rows: int = Field(500, ge=1)  # ... or as soon as this many are waiting
    queue_rows: int = Field(100_000, ge=1)  # impressions waiting beyond this are dropped
    pool_size: int = Field(8, ge=1)  # warehouse connections per worker
    artifacts: Path | None = None  # the model artifacts' root (default: ml/config.toml's)


def from_env(environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT) -> ServingConfig:
    """SERVING_TOKENS (comma-separated) and SERVING_ARTIFACTS_DIR, from `environ` (default
    os.environ) over `root/.env` (or MOOVITAMIX_ENV_FILE's file); empty means unset."""
    values = env_file_values(environ, root)
    values.update(os.environ if environ is None else environ)
    tokens = (values.get(TOKENS_ENV) or "").split(",")
    artifacts = (values.get(ARTIFACTS_ENV) or "").strip()
    return ServingConfig(
        tokens=tuple(token.strip() for token in tokens if token.strip()),
        artifacts=Path(artifacts).resolve() if artifacts else None,
    )
