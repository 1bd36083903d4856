"""Stage resolve_production: resolve the registry aliases the pipeline reads to version ids.

    python -m tasks.resolve_production

Writes artifacts/production/publish.json and train_frozen.json (tasks/registry/resolved.py);
``always_changed`` in dvc.yaml, so it runs on every ``dvc repro`` and flow run (one alias
read each), and the stages that read the registry are stale exactly when an alias they read
has moved (``tagsmith registry promote``/``rollback``, or another run's publish).
"""

from __future__ import annotations


from tasks.common.config import RegistryConfig, TrainFrozenConfig, load
from tasks.common.errors import stage_main
from tasks.registry import resolved


def main() -> None:
    """Entry point of ``python -m tasks.resolve_production``."""
    def body() -> dict:
        reg = load(RegistryConfig)
        return {"publish": resolved.publish_input(reg),
                "train_frozen": resolved.train_frozen_input(load(TrainFrozenConfig), reg)}

    inputs = stage_main("resolve_production", body)
    resolved.write(inputs)
    for stage, data in inputs.items():
        what = (f"{data['store']}/{data['model']}@{data['alias']} = {data['version'] or 'unset'}"
                if "alias" in data else "nothing from the registry")
        print(f"resolve_production: {stage} reads {what}")


if __name__ == "__main__":
    main()
