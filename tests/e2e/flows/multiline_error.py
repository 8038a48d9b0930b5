"""A flow whose `check` task fails (no retry) with an error message of several lines, as a schema
contract violation gives: the lines after the first are the ones that say what is wrong."""

from __future__ import annotations

from rayline import flow, task

PROBLEMS = (
    "schema contract violated (2 problems):",
    "  file part-3.parquet: column 'age': expected int64, found string",
    "  file part-7.parquet: column 'region' is missing",
)


@task(retries=0)
def check() -> int:
    raise ValueError("\n".join(PROBLEMS))


@flow
def multiline_error():
    return check()
