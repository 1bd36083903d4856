"""Benchmarks: where the time goes (input pipeline, training, orchestration, data preparation).

    python -m benchmarks.run [input training orchestration dataprep accuracy] [--scale S] [--reps N]

Each benchmark writes ``benchmarks/results/<name>.json``; ``benchmarks/results/SUMMARY.md``
tables every result file present. Not part of ``make test`` (tests/code/test_benchmarks_smoke.py
runs each at a tiny size).
"""
