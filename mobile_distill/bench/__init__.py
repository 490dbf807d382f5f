"""Benchmarks of exported models: size, latency, throughput, memory and Recall@K per format.

    from mobile_distill.bench import bench
    report = bench("runs/student/export", threads=[1, 2])

Names are imported lazily, so the CLI can build its flags from ``BenchConfig`` without loading NumPy.
"""

import importlib

_EXPORTS = {"bench": "api", "failure_message": "api", "BenchConfig": "config", "format_table": "report",
            "BenchError": "config"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
