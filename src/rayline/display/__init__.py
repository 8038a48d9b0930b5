"""How rayline shows things: graphs as text, Mermaid and DOT (``render``), notebook HTML
(``notebook``, ``ipython``), and the one read model of a run (``run_view``) that the CLI, the
notebook and the ``Run`` handle all render.

This floor sits above ``launch``/``triggers`` and beside ``api``: it may import anything below
it, never ``api`` or ``cli``. The SDK never imports it; notebook display of SDK types is
registered from here (``rayline.display.ipython``).
"""
