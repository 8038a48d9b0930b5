"""The ground floor: the SQL kernel (engine factory, migrations, the network-filesystem refusal),
the run store, leases, flow slots, trigger state, run and task states, and the content-addressed
artifact store. Imports nothing above ``errors`` and ``config``."""
