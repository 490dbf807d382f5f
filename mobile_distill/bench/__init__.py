"""Benchmarks of exported models: size, latency, throughput, memory and Recall@K per format.

    from mobile_distill.bench import bench
    report = bench("runs/student/export", threads=[1, 2])
"""

from .api import BenchError, bench, failure_message
from .config import BenchConfig
from .report import format_table

__all__ = ["bench", "BenchConfig", "BenchError", "failure_message", "format_table"]
