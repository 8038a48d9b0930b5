"""The engine: validate and compile a ``Graph`` into a ``Plan``, run it through an executor,
record every state change in the run store. Imports nothing from tasks/connectors/triggers/
serving/cli."""
