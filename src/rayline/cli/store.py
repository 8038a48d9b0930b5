"""``rayline store verify`` and ``rayline store gc``: check and clean the artifact store.

``verify`` reads every object and reports damaged ones (bytes or manifest failing their
checks), incomplete ones (a write that crashed before its manifest) and orphaned ones (nothing
refers to them); ``--repair`` marks every run output that is damaged lost (``rayline resume``
then recomputes it and what depends on it), drops cache entries pointing at it and discards it.
``gc`` removes dead writers' temp files, incomplete objects and objects no run, cache entry or
model refers to, and says how many bytes that freed.

Exit codes: 0 the store is sound (``verify``: nothing damaged, or all of it repaired; ``gc``:
done), 1 ``verify`` found damaged objects and was not asked to repair them, 2 a usage error.
"""

from __future__ import annotations

import json
from typing import Any

import click

EXIT_SOUND, EXIT_DAMAGED = 0, 1


@click.group("store", context_settings={"help_option_names": ["-h", "--help"]})
def store_group() -> None:
    """Check and clean the artifact store ($RAYLINE_HOME/artifacts).

    \b
    Examples:
      rayline store verify              report damaged, incomplete and orphaned objects
      rayline store verify --repair     mark damaged outputs lost; resume recomputes them
      rayline store gc --dry-run        what gc would remove, and the bytes it would free

    Exit codes: 0 sound (or repaired), 1 damaged objects found (verify without --repair),
    2 usage error.
    """


class _Stores:
    """The run store and the artifact store of ``RAYLINE_HOME``, opened without the sweep that
    ``ArtifactStore.open`` does (so that ``gc --dry-run`` removes nothing)."""

    def __init__(self) -> None:
        from rayline.config import Settings
        from rayline.store.artifacts import ArtifactStore
        from rayline.store.runs import RunStore

        self.settings = Settings()
        home = self.settings.resolved_home
        if not (home / "secret.key").exists():
            raise click.UsageError(f"no rayline store at {home} (set RAYLINE_HOME)")
        self.artifacts = ArtifactStore.for_settings(self.settings, sweep=False)
        self.runs = RunStore(self.settings.run_store_url)

    def __enter__(self) -> _Stores:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.runs.close()


def _referenced(stores: _Stores) -> set[str]:
    """Digests that something outside the artifact store refers to: the runs' tasks and
    triggers, and the model registry's versions and feature transforms."""
    from rayline.models.registry.sql import ModelRegistry

    refs = stores.runs.referenced_digests()
    with ModelRegistry(stores.settings) as registry:  # same database; an older registry.db imported
        for model in registry.list_models():
            for v in registry.versions(model.name):
                refs |= {d for d in (v.digest, v.features_digest) if d}
    return refs


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@store_group.command("verify", short_help="Check every object; --repair marks damaged outputs lost.")
@click.option("--repair", is_flag=True, help="Mark damaged run outputs lost (resume recomputes them), "
              "drop cache entries pointing at them and discard them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def verify_cmd(repair: bool, as_json: bool) -> int:
    """Read every object of the artifact store and check its checksum and signature.

    Reports damaged objects (and the run tasks whose output they are), incomplete ones (bytes
    without a manifest: `rayline store gc` removes them) and orphaned ones (nothing refers to
    them). Exit code 1 if damaged objects were found and not repaired, else 0.

    \b
    Examples:
      rayline store verify
      rayline store verify --repair && rayline resume 1a2b3c
      rayline store verify --json | jq '.damaged[].digest'
    """
    from rayline.store.artifact_scan import scan_store

    with _Stores() as stores:
        report = scan_store(stores.artifacts, _referenced(stores))
        damaged = {p.digest: p for p in report.damaged}
        users = stores.runs.tasks_with_digests(damaged)
        marked: list[dict[str, Any]] = []
        if repair:
            for run_id, node_id, digest in users:
                changed = stores.runs.mark_output_lost(run_id, node_id, digest, damaged[digest].detail,
                                                    lease_ttl=stores.settings.lease_ttl,
                                                    found_by="rayline store verify --repair")  # fmt: skip
                marked.append({"run_id": run_id, "node_id": node_id, "digest": digest, "changed": changed})
            for kind, where, _ in report.broken_pointers:
                if kind == "cache":
                    stores.artifacts.cache_remove(where[0])
            for digest in damaged:
                stores.artifacts.discard(digest)
    data = {**report.as_dict(), "used_by": [{"run_id": r, "node_id": n, "digest": d} for r, n, d in users],
            "repaired": repair, "marked_lost": marked}  # fmt: skip
    code = EXIT_DAMAGED if damaged and not repair else EXIT_SOUND
    if as_json:
        click.echo(json.dumps(data, default=str))
        return code
    click.echo(f"checked {report.objects} objects ({_mb(report.bytes)}): {len(report.damaged)} damaged, "
               f"{len(report.incomplete)} incomplete, {len(report.orphaned)} orphaned, "
               f"{len(report.broken_pointers)} broken pointers")  # fmt: skip
    by_digest: dict[str, list[str]] = {}
    for r, n, d in users:
        by_digest.setdefault(d, []).append(f"run {r} task '{n}'")
    for p in report.damaged:
        used = "; output of " + ", ".join(by_digest[p.digest]) if p.digest in by_digest else ""
        click.echo(f"damaged     {p.digest}  {p.detail.splitlines()[0][:160]}{used}")
    for p in report.incomplete:
        click.echo(f"incomplete  {p.digest}  {p.detail} (`rayline store gc` removes it)")
    for kind, where, digest in report.broken_pointers:
        click.echo(f"broken      {kind} {'/'.join(where)} -> {digest or 'unreadable entry'}")
    if repair and damaged:
        runs = sorted({m["run_id"] for m in marked})
        click.echo(f"repaired: discarded {len(damaged)} damaged objects, marked outputs lost in "
                   f"{len(runs)} runs" + "".join(f"\n  rayline resume {r}" for r in runs))  # fmt: skip
    elif damaged:
        click.echo("run `rayline store verify --repair`, then resume the runs named above", err=True)
    return code


@store_group.command("gc", short_help="Remove dead writers' temp files and unreferenced objects.")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.option("--min-age", "min_age_s", default=3600.0, show_default=True, type=click.FloatRange(min=0),
              help="Keep objects changed within this many seconds (a running task may have just "
                   "written one that its driver has not recorded yet).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def gc_cmd(dry_run: bool, min_age_s: float, as_json: bool) -> int:
    """Free space: remove the temp files of writers that are gone (a dead pid on this machine,
    or no change for the lease TTL elsewhere), incomplete objects, and objects that no run,
    cache entry or registered model refers to. Prints the bytes freed.

    \b
    Examples:
      rayline store gc --dry-run
      rayline store gc --json | jq .bytes_freed
    """
    from rayline.store.artifact_scan import collect_garbage

    with _Stores() as stores:
        report = collect_garbage(stores.artifacts, _referenced(stores), lease_ttl=stores.settings.lease_ttl,
                                 min_age_s=min_age_s, dry_run=dry_run)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return EXIT_SOUND
    verb = "would remove" if dry_run else "removed"
    for path, size in report.temp_files:
        click.echo(f"temp file  {path}  {_mb(size)}")
    for digest, size, why in report.objects:
        click.echo(f"object     {digest}  {_mb(size)}  {why}")
    young = f"; kept {report.kept_young} younger than {min_age_s:g} s" if report.kept_young else ""
    click.echo(f"{verb} {len(report.temp_files)} temp files and {len(report.objects)} objects: "
               f"{_mb(report.bytes_freed)} {'would be ' if dry_run else ''}freed{young}")
    return EXIT_SOUND
