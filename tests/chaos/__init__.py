"""The chaos run (`make chaos`, `python -m tests.chaos`): a private stack under mixed load,
each of its processes and servers killed or frozen in turn and brought back, then the
invariants of `../shared/spec/design.md` checked against what the API acknowledged.

- `stack.py`: the stack (PostgreSQL, Valkey, SeaweedFS, API, worker, edge with 2 workers),
  on private ports and data, and the signals that break and restore each part;
- `history.py`: what the load did and what it was told (acknowledgements, with times);
- `load.py`: the load itself (REST and gRPC uploads, URLs created, updated and revoked,
  deletes, edge reads of live and dead URLs);
- `faults.py`: the fault plan, and recovery times (until a request through the broken
  path succeeds again);
- `checks.py`: the invariants, after recovery and a reconcile pass;
- `report.py`: the figures, as a table.
"""
