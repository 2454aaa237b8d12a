"""Every setting Polis reads, declared once with its help text; `POLIS_*` environment variables set them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_datasets_dir() -> Path:
    # The public datasets sit beside the project in ../shared/data; a user elsewhere points
    # POLIS_DATASETS_DIR at their own copy.
    here = Path(__file__).resolve()
    for parent in [Path.cwd(), *here.parents]:
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd().parent / "shared" / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POLIS_", extra="ignore")

    data_dir: Path = Field(
        default=Path("polis-data"),
        description="Directory for the hub's own files: the DuckDB database, archives, caches.",
    )
    datasets_dir: Path = Field(
        default_factory=_default_datasets_dir,
        description="Directory holding the public datasets (read only); defaults to ../shared/data.",
    )
    host: str = Field(default="127.0.0.1", description="Address the API server listens on.")
    port: int = Field(default=8000, description="Port the API server listens on.")
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        description="Largest request body accepted; bigger bodies get 413.",
    )
    default_limit: int = Field(default=20, description="Entities returned per query page when no limit is given.")
    max_limit: int = Field(
        default=1000, description="Largest `limit` a query may ask for; above it the answer is 403 TooManyResults."
    )
    max_temporal_instances: int = Field(
        default=10_000,
        description="Most temporal instances per attribute in one answer; more gives 206 with Content-Range.",
    )
    context_fetch_timeout_s: float = Field(
        default=2.0,
        description="Seconds to wait for a remote @context before answering LdContextNotAvailable.",
    )
    mqtt_url: str | None = Field(
        default=None,
        description="MQTT broker to take sensor streams from (mqtt://127.0.0.1:1883); unset = no MQTT ingest.",
    )
    memory_limit: str = Field(default="512MB", description="DuckDB memory limit for the embedded store.")
    duckdb_threads: int = Field(default=2, description="Threads DuckDB may use.")

    @property
    def database_path(self) -> Path:
        return self.data_dir / "polis.duckdb"

    @property
    def context_cache_dir(self) -> Path:
        return self.data_dir / "contexts"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"
