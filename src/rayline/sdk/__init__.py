"""What users touch: decorators, specs, tracing and the YAML flow loader.

The SDK imports nothing from ``rayline.engine``: it produces an immutable ``Graph`` that the
engine compiles and runs.
"""
