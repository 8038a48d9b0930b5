"""``rayline drift show MODEL [--json]``: the latest drift report of a served model.

The report is what the drift monitor (``rayline.triggers.drift``) stored last as the artifact
``named/drift/<model>`` in ``RAYLINE_HOME``. Exit code 2 when no report exists for the model.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import click


@click.group("drift")
def drift_group() -> None:
    """Drift of served inputs against the training data."""


@drift_group.command("show")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def drift_show(model: str, as_json: bool) -> None:
    """Show the latest drift report of MODEL: per feature PSI, KS, p-value, drifted."""
    from rayline.errors import StoreError
    from rayline.monitoring.drift_stats import load_report

    try:
        report = load_report(model)
    except StoreError:
        raise click.UsageError(f"no drift report for model '{model}' yet (the drift monitor stores "
                               "one each time it checks)") from None  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return
    when = datetime.fromtimestamp(report.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    click.echo(f"{report.summary()} (checked {when})")
    click.echo(f"{'feature':<24} {'kind':<12} {'PSI':>8} {'KS':>8} {'p-value':>10}  drifted")
    for f in report.features:
        click.echo(f"{f.name[:24]:<24} {f.kind:<12} {_num(f.psi):>8} {_num(f.ks):>8} "
                   f"{_num(f.p_value, 3):>10}  {'yes' if f.drifted else 'no'}")  # fmt: skip


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}" if 0 < abs(v) < 1e-3 else f"{v:.{digits}f}"
