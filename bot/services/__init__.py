"""Services: the only place the engine, the flows and the store meet."""
