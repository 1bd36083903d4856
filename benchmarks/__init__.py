"""Benchmarks: where the time goes (input pipeline, training, orchestration, data preparation).

    python -m benchmarks.run [input training orchestration dataprep augmentation accuracy] [--scale S] [--reps N]
    python -m benchmarks.summary        # SUMMARY.md and the README's table from the result files
    python benchmarks/gpu_jax.py ...    # the GPU measurement (JAX backend), see its docstring

One method for all (benchmarks/harness.py); each benchmark writes
``benchmarks/results/<name>.json`` with the commit it ran from. Not part of ``make test``
(tests/code/test_benchmarks_smoke.py runs each at a tiny size, marked ``bench``); the
harness's own unit tests are (tests/code/test_benchmark_harness.py).
"""
