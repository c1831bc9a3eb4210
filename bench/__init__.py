"""Benchmarks and performance targets: `python -m bench [--quick] [--postgres URL]`.

See docs/performance.md for what each scenario measures and the targets it is held to.
"""
