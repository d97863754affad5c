"""The fine-tuning demo: a tiny model trained on a synthetic log through the SDK's public commands, scored on
held-out scenes against baselines (`rgpt4d-sdk demo train`)."""
from .pipeline import SIZES, DemoSize, run_demo_train

__all__ = ["SIZES", "DemoSize", "run_demo_train"]
