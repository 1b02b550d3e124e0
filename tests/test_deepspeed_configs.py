"""Every DeepSpeed file is accepted by DeepSpeed's own config parser once the trainer fills its "auto" values."""

import json
from pathlib import Path

import pytest
from deepspeed.runtime.config import DeepSpeedConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "deepspeed_configs").glob("*.json"))


def fill_auto(value, fills):
    if isinstance(value, dict):
        return {k: fills.get(k, v) if v == "auto" else fill_auto(v, fills) for k, v in value.items()}
    return value


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_deepspeed_parses_config(path):
    raw = json.loads(path.read_text())
    fills = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
             "gradient_clipping": 1.0, "enabled": False, "reduce_bucket_size": 5e8}
    config = DeepSpeedConfig(fill_auto(raw, fills))
    assert config.zero_optimization_stage == raw["zero_optimization"]["stage"]
    assert config.train_batch_size == 8
