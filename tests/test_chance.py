"""An untrained model must not beat chance: the whole embedded sample (the data `rgpt4d-sdk analyze` runs on by
default), answered by an explicitly *untrained* tiny checkpoint (random weights, made here with `make_tiny`, so this
stays true whatever checkpoint the default run ships), scores no higher than chance + 3 standard errors on every
multiple-choice task, both with unmatched replies scored 0 and with the official 1/N expectation for them."""
from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest

from rgpt4d_sdk.analyze.default import default_config
from rgpt4d_sdk.analyze.runner import run_analysis
from rgpt4d_sdk.eval.questions import FAMILIES
from rgpt4d_sdk.eval.scoring import expected_official
from rgpt4d_sdk.model.tiny import make_tiny


@pytest.fixture(scope="module")
def untrained_rows(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chance")
    ckpt = make_tiny(tmp / "untrained", seed=11)  # random weights, never trained
    cfg = default_config(tmp / "out")
    cfg.engine.model = str(ckpt)
    cfg.progress = False
    run_analysis(cfg, echo=lambda *a, **k: None)
    return [json.loads(line) for line in (tmp / "out" / "results.jsonl").read_text().splitlines()]


def test_untrained_checkpoint_is_at_or_below_chance_on_every_task(untrained_rows):
    by_task = defaultdict(list)
    for r in untrained_rows:
        if r["status"] == "ok" and r["format"] == "mc" and r["truth"]:
            by_task[r["task"]].append(r)
    assert set(by_task) == set(FAMILIES), "the embedded sample must ask every family as multiple choice"
    report = {}
    for task, rows in sorted(by_task.items()):
        p = [1.0 / len(r["options"]) for r in rows]
        n = len(rows)
        chance = sum(p) / n
        se = math.sqrt(sum(q * (1 - q) for q in p)) / n
        correct = [1.0 if r["answer_choice"] == r["truth"] else 0.0 for r in rows]
        official = [expected_official(c == 1.0, r["matched_by"], len(r["options"])) for c, r in zip(correct, rows)]
        acc, acc_official = sum(correct) / n, sum(official) / n
        report[task] = (n, round(acc, 3), round(acc_official, 3), round(chance, 3), round(se, 3))
        assert all(r["matched_by"] in ("letter", "option_text", "none") for r in rows)
        assert acc <= chance + 3 * se, (task, report[task])
        assert acc_official <= chance + 3 * se, (task, report[task])
    assert sum(v[0] for v in report.values()) >= 100  # the whole sample, not a handful of rows


def test_rows_record_the_family_and_the_clock_offset(untrained_rows):
    ok = [r for r in untrained_rows if r["status"] == "ok"]
    assert ok and all(r["task"] in FAMILIES for r in ok)
    assert all(r["clock_offset_s"] == {r["camera"]: 0.0} for r in ok)
