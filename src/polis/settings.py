"""Every setting Polis reads, declared once with its help text; `POLIS_*` environment variables set them."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
    max_batch_entities: int = Field(
        default=10_000,
        ge=1,
        description="Most entities one batch operation (/entityOperations/*) may hold; a bigger batch is 400 and "
        "writes nothing (a gateway sends its readings in several batches). Also bounds POST query's selectors.",
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
    alert_rules_file: Path | None = Field(
        default=None,
        description="Alert rules (JSON, or YAML) loaded into the default tenant at start, replacing same-id rules.",
    )
    alert_sender: str = Field(
        default="polis.local",
        description="CAP `sender` of every alert message: the hub's globally unique name (no spaces or commas).",
    )
    pseudonym_secret: SecretStr | None = Field(
        default=None,
        description="Master secret for the daily HMAC pseudonyms (32+ characters); unset = read pseudonym_secret_file.",
    )
    pseudonym_secret_file: Path | None = Field(
        default=None,
        description="File (mode 0600, created on first use) holding the pseudonym master secret, kept outside the "
        "database; default ~/.config/polis/pseudonym-master.key.",
    )
    raw_retention_days: float = Field(
        default=7.0,
        gt=0,
        description="Days raw pseudonymous mobility records are kept, counted from the data's own newest time.",
    )
    h3_resolution: int = Field(
        default=8, ge=0, le=15, description="H3 resolution of released counts per cell (mobility flows)."
    )
    od_h3_resolution: int = Field(
        default=7, ge=0, le=15, description="H3 resolution (coarser) of released origin-destination matrices."
    )
    suppression_k: int = Field(
        default=10, ge=1, description="Released counts below k are suppressed, with complementary suppression."
    )
    flows_unit: Literal["cell", "station"] = Field(
        default="cell",
        description="Hourly flows are released per H3 cell or per station, not both (one would solve the other).",
    )
    # An int checked below, not Literal[24, 8]: pydantic compares a Literal's members by type, so the
    # environment's "8" matched neither and POLIS_OD_WINDOW_HOURS could not be set at all.
    od_window_hours: int = Field(
        default=24,
        description="OD matrices are released per day (24) or per 8-hour window (8), not both (same reason).",
    )
    dp_epsilon_budget: float = Field(
        default=10.0, ge=0, description="Differential-privacy budget: total epsilon each dataset's releases may use."
    )
    dp_delta: float = Field(
        default=1e-6, gt=0, lt=1, description="Delta at which Gaussian (zCDP) releases are charged to the budget."
    )
    notify_retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before retrying a failed notification; doubles on each failure."
    )
    notify_retry_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between retries of a failed notification (it is never dropped)."
    )
    max_subscriptions_per_department: int = Field(
        default=1000,
        ge=1,
        description="Subscriptions one department may hold, all tenants together: each with a backlog has its own "
        "delivery worker, so an unbounded number to a dead endpoint would exhaust the hub's threads.",
    )
    notify_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a whole notification attempt (resolving, connecting, sending, the answer's status and "
        "headers) may take, unless its endpoint.timeout says otherwise.",
    )
    # Comma-separated CIDR lists in one string: pydantic-settings reads a list-typed setting from the
    # environment as JSON, and "10.0.0.0/8,fc00::/7" is what an operator writes.
    subscription_endpoint_deny: str = Field(
        default="169.254.0.0/16,fe80::/10,100.100.100.200/32,fd00:ec2::254/128,0.0.0.0/8,::/128,224.0.0.0/4,"
        "ff00::/8,255.255.255.255/32",
        description="Networks (CIDR, comma-separated) subscription notifications may never reach, checked on the "
        "endpoint's literal IP at create/update and on every address its host resolves to at delivery. Setting it "
        "replaces the default (link-local and cloud metadata, unspecified, multicast, broadcast): keep those in; "
        "loopback and private ranges are allowed unless listed (e.g. add 10.0.0.0/8,127.0.0.0/8,::1/128).",
    )
    subscription_endpoint_allow: str = Field(
        default="",
        description="Networks (CIDR, comma-separated) allowed although inside a subscription_endpoint_deny network, "
        "e.g. one internal webhook host in a denied private range. Unspecified and multicast stay refused. An IPv6 "
        "address leading to an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo) is judged as both: list the IPv4 network.",
    )
    api_key_hash_time_cost: int = Field(
        default=3, ge=1, description="argon2id passes when hashing and checking API keys (argon2-cffi's default)."
    )
    api_key_hash_memory_kib: int = Field(
        default=65536, ge=8, description="argon2id memory in KiB when hashing API keys (argon2-cffi's default, 64 MiB)."
    )
    api_key: str | None = Field(
        default=None,
        description="API key the CLI sends to a running hub (doctor, deadletters --url); default: DATA_DIR/admin.key.",
    )
    api_key_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a verified API key is remembered in memory (argon2 is slow); a revocation clears it.",
    )
    api_key_failed_checks_per_s: float = Field(
        default=2.0,
        gt=0,
        description="Wrong secrets checked (argon2) per second for one key id, after a burst of 5; beyond it a "
        "request gets 429 with Retry-After, unchecked. The right key is never held back (one created by an older "
        "Polis once it has been verified).",
    )

    @field_validator("od_window_hours")
    @classmethod
    def _od_window(cls, hours: int) -> int:
        if hours not in (24, 8):
            raise ValueError("od_window_hours must be 24 or 8")
        return hours

    @field_validator("subscription_endpoint_deny", "subscription_endpoint_allow")
    @classmethod
    def _networks(cls, text: str) -> str:
        """Refused at start when a network does not parse: a typo must not silently leave a range open."""
        parts = [part.strip() for part in text.split(",") if part.strip()]
        for part in parts:
            try:
                ip_network(part, strict=False)  # 10.0.0.1/8 is read as 10.0.0.0/8
            except ValueError:
                raise ValueError(f"'{part}' is not a network in CIDR notation (e.g. 10.0.0.0/8, fc00::/7)") from None
        return ",".join(parts)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "polis.duckdb"

    @property
    def access_db_path(self) -> Path:
        return self.data_dir / "access.sqlite3"

    @property
    def audit_log_path(self) -> Path:
        return self.data_dir / "audit" / "audit.jsonl"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"

    @property
    def context_cache_dir(self) -> Path:
        return self.data_dir / "contexts"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"
