"""Pure analysis library over plain records: scores, and (later) themes, segments, personas.

Never imports ``bot``: it takes plain Python values so it can run in a worker process, a
notebook or a test without a database.
"""
