"""`polis admin` (departments, keys, grants) and `polis audit` (verify the chain), on a hub's data dir.

They work beside a running server: the grants live in SQLite (the server notices changes at once) and
the audit log takes appends from several processes."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from polis.access.control import AccessControl

console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Hub files (default $POLIS_DATA_DIR or ./polis-data)")]


def _control(data_dir: Path | None, *, existing: bool = False) -> AccessControl:
    """The hub's access control; with `existing`, only a hub that already has one (a reading command)."""
    from polis.access.control import AccessControl
    from polis.cli import hub_settings, require_hub_file

    settings = hub_settings(data_dir)
    if existing:
        require_hub_file(settings.access_db_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return AccessControl(settings)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(data_dir: Path | None, action: str, *args: str) -> None:
    from polis.access.departments import AccessError

    control = _control(data_dir)
    try:
        getattr(control, action)(*args, who=_who())
    except AccessError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    finally:
        control.close()


def register(app: typer.Typer, bench: typer.Typer) -> None:
    admin = typer.Typer(help="Departments, API keys and grants (deny by default).", no_args_is_help=True)
    audit = typer.Typer(help="The hash-chained audit log of every access decision.", no_args_is_help=True)
    app.add_typer(admin, name="admin")
    app.add_typer(audit, name="audit")

    @admin.command("department")
    def department(
        name: Annotated[str, typer.Argument(help="lowercase name, e.g. transport, health, emergency")],
        description: Annotated[str, typer.Option(help="What the department is")] = "",
        data_dir: DataDir = None,
    ) -> None:
        """Create a department (it holds no grant until given one)."""
        _run(data_dir, "create_department", name, description)
        console.print(f"department '{name}' created; grant it access: polis admin grant {name} ...", soft_wrap=True)

    @admin.command("key")
    def create_key(
        department: Annotated[str, typer.Argument(help="The department the key acts as")],
        data_dir: DataDir = None,
    ) -> None:
        """Create an API key for a department. It is printed once and stored only hashed."""
        from polis.access.departments import AccessError

        control = _control(data_dir)
        try:
            key = control.create_key(department, who=_who())
        except AccessError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
        finally:
            control.close()
        console.print(f"key id {key.key_id} for '{department}'; the key (shown once, keep it safe):", highlight=False)
        print(key.secret_key)  # plain stdout, nothing else on the line: easy to capture

    @admin.command("revoke-key")
    def revoke_key(key_id: Annotated[str, typer.Argument(help="The key id (the part after polis_)")],
                   data_dir: DataDir = None) -> None:
        """Revoke a key: it stops working at once, running servers included."""
        _run(data_dir, "revoke_key", key_id)
        console.print(f"key {key_id} revoked")

    @admin.command("grant")
    def grant(
        department: str,
        dataset: Annotated[str, typer.Argument(help="e.g. los-loop, citibike-jersey-city, alerts, operations, *")],
        tier: Annotated[str, typer.Argument(help="raw-pseudonymous, aggregate or public")],
        action: Annotated[str, typer.Argument(help="read, write, subscribe or administer")],
        data_dir: DataDir = None,
    ) -> None:
        """Let DEPARTMENT do ACTION on TIER of DATASET (refused for a tier the dataset is not served at).
        Read includes the coarser tiers of the same dataset, and every department may do what 'public' may."""
        _run(data_dir, "grant", department, dataset, tier, action)
        console.print(f"granted {action} {dataset}/{tier} to '{department}'")

    @admin.command("revoke")
    def revoke(department: str, dataset: str, tier: str, action: str, data_dir: DataDir = None) -> None:
        """Take a grant back."""
        _run(data_dir, "revoke_grant", department, dataset, tier, action)
        console.print(f"revoked {action} {dataset}/{tier} from '{department}'")

    @admin.command("list")
    def list_all(data_dir: DataDir = None) -> None:
        """Departments with their grants and keys (ids only: keys are never shown again)."""
        from polis.access.grants import Grant, never_applies

        def shown(grant: Grant) -> str:  # a grant stored before such grants were refused: say it does nothing
            problem = never_applies(grant)
            return str(grant) if problem is None else f"{grant} (never applies: {problem})"

        control = _control(data_dir, existing=True)
        try:
            table = Table(title="departments", caption="every department may also do what 'public' may")
            for column in ("department", "grants", "keys (live)"):
                table.add_column(column, overflow="fold")
            for name, _ in control.departments.departments():
                perms = control.departments.permissions(name)
                keys = [k.id for k in control.departments.keys(name) if k.revoked_at is None]
                grants = sorted(shown(g) for g in perms.grants)
                table.add_row(name, "\n".join(grants) or "-", "\n".join(keys) or "-")
        finally:
            control.close()
        console.print(table)

    @audit.command("verify")
    def verify(
        head: Annotated[str | None, typer.Option(help="A head hash recorded earlier: detects cut-off entries")] = None,
        data_dir: DataDir = None,
    ) -> None:
        """Check the hash chain of the audit log; exit 1 at the first entry that was changed, removed or moved."""
        from polis.access.audit import verify as verify_chain
        from polis.cli import fail, hub_settings
        from polis.domain.errors import BadRequestData

        settings = hub_settings(data_dir)
        try:
            result = verify_chain(settings.audit_log_path, head)
        except BadRequestData as error:  # a malformed --head
            fail(f"--head: {error.detail}", 2)
        if result.ok:
            console.print(f"audit log intact: {result.entries:,} entries, head {result.head}", soft_wrap=True)
            return
        console.print(f"[red]audit log broken[/red]: {result.problem} ({result.entries:,} entries good before it)")
        raise typer.Exit(1)
