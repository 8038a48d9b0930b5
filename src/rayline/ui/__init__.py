"""The web UI (``rayline ui``): runs, their graphs and errors, flows and schedules, models.

A Starlette app rendering Jinja2 templates on the server; htmx (vendored under ``static/``)
polls the run page for live node states. Everything it shows is read through the same read
model as the CLI (``rayline.display.run_view``); every button goes through the CLI's own paths
(``rayline.ui.actions``). Nothing is fetched from the internet at run time.

Modules: ``app`` (routes), ``pages_runs``, ``pages_flows``, ``pages_models`` (what each page
reads), ``graph_svg`` (the run's graph as positioned boxes), ``security`` (token and CSRF),
``actions`` (resume, cancel, promote, rollback), ``server`` (bind and serve).
"""
