"""`polis alerts ...`: load rules from a file (into a hub's files, or a running server), list rules and
alerts, print the demo rule set; `polis bench crowd`: the crowd-gathering evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from polis.settings import Settings

console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Hub files (default $POLIS_DATA_DIR or ./polis-data)")]
Url = Annotated[str | None, typer.Option(help="A running hub, e.g. http://127.0.0.1:8000 (else its files)")]
Tenant = Annotated[str, typer.Option(help="NGSI-LD tenant (default: the default tenant)")]


def _settings(data_dir: Path | None) -> Any:
    from polis.cli import hub_settings

    return hub_settings(data_dir)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    alerts = typer.Typer(help="Alert rules and the alerts they raise (CAP 1.2).", no_args_is_help=True)
    app.add_typer(alerts, name="alerts")

    @alerts.command("load")
    def load(
        file: Annotated[Path, typer.Argument(help="Rules file: JSON (or YAML) list, or {'rules': [...]}")],
        url: Url = None,
        data_dir: DataDir = None,
        tenant: Tenant = "",
    ) -> None:
        """Validate a rules file and install its rules (same id: replaced). Without --url they go into the
        hub's files and take effect when it next starts."""
        from polis.alerts.rulebook import RuleBook
        from polis.alerts.rules import load_rules_file, rule_json
        from polis.domain.errors import BadRequestData
        from polis.domain.tenant import tenant_problem

        settings = _settings(data_dir)
        problem = tenant_problem(tenant) if tenant else None
        if problem is not None:  # the API checks its header; the files written below get the same check
            console.print(f"[red]--tenant {problem[0]}[/red]")
            raise typer.Exit(2)
        try:
            rules = load_rules_file(file)
        except (BadRequestData, OSError) as error:
            console.print(f"[red]{file}: {getattr(error, 'detail', error)}[/red]")
            raise typer.Exit(2) from None
        if url is not None:
            from polis.cli import hub_errors, hub_json
            from polis.epidemic.views import HubError

            with hub_errors():
                for rule in rules:
                    try:
                        hub_json(url, f"/polis/v1/alerts/rules/{rule.id}", settings, tenant, "PUT",
                                 json=rule_json(rule))
                    except HubError as error:  # which rule, of the file's
                        raise HubError(f"rule {rule.id}: {error.message}", error.code) from None
        else:
            _refuse_if_served(settings)
            book = RuleBook(settings.data_dir / "alerts" / "rules.json")
            for rule in rules:
                book.put(tenant, rule)
        where = url or f"{settings.data_dir} (active at the next start)"
        console.print(f"loaded {len(rules)} alert rules into {where}: {', '.join(str(r.id) for r in rules)}")

    @alerts.command("rules")
    def rules(url: Url = None, data_dir: DataDir = None, tenant: Tenant = "") -> None:
        """The declared rules."""
        from polis.alerts.rulebook import RuleBook
        from polis.alerts.rules import rule_json

        settings = _settings(data_dir)
        if url is not None:
            from polis.cli import hub_errors, hub_json

            with hub_errors():
                items = hub_json(url, "/polis/v1/alerts/rules", settings, tenant)
        else:
            items = [rule_json(r) for r in RuleBook(settings.data_dir / "alerts" / "rules.json").of(tenant)]
        table = Table(title=f"alert rules ({len(items)})")
        for column in ("id", "kind", "name", "scope", "severity"):
            table.add_column(column, overflow="fold")
        for item in items:
            table.add_row(item["id"], item["kind"], item["name"], item["scope"]["type"], item["severity"])
        console.print(table)

    @alerts.command("list")
    def list_alerts(
        url: Annotated[
            str | None, typer.Option(help="The running hub (default http://POLIS_HOST:POLIS_PORT)")
        ] = None,
        every: Annotated[bool, typer.Option("--all", help="Ended ones too (cancelled, expired)")] = False,
        data_dir: Annotated[
            Path | None, typer.Option("--data-dir", help="Where the admin key is read (no POLIS_API_KEY)")
        ] = None,
        tenant: Tenant = "",
    ) -> None:
        """Alerts of a running hub, newest first (alerts live in the hub: ask the server, not its files)."""
        from polis.cli import hub_errors, hub_json

        settings = _settings(data_dir)
        with hub_errors():
            found = hub_json(url or f"http://{settings.host}:{settings.port}", "/polis/v1/alerts", settings, tenant,
                             params={"status": "all" if every else "active"})
        table = Table(title="alerts")
        for column in ("id", "status", "severity", "onset", "headline"):
            table.add_column(column, overflow="fold")
        for item in found:
            table.add_row(item["id"], item["status"], item["severity"], item["onset"], item["headline"])
        console.print(table)

    @alerts.command("demo-rules")
    def demo_rules() -> None:
        """Print the demo city's rules as JSON (a starting point for your own file)."""
        from polis.alerts.demo import DEMO_RULES

        print(json.dumps({"rules": DEMO_RULES}, indent=2))

    @bench.command("crowd")
    def bench_crowd() -> None:
        """Crowd-gathering detection on the real Melbourne counts with injected gatherings (from a checkout)."""
        try:
            from benchmarks.bench_crowd import run
        except ImportError:
            console.print("[red]run this from a Polis checkout: the benchmarks are not installed[/red]")
            raise typer.Exit(2) from None
        run()


def _refuse_if_served(settings: Settings) -> None:
    """A server holding this data directory keeps its own copy of the rules and writes it back at the next rule
    change through the API: rules written into its files beside it would be lost. Its database lock tells, and
    `open_hub_read_only` says so with the server's address."""
    from polis.cli import open_hub_read_only

    if settings.database_path.is_file():
        open_hub_read_only(settings).close()
