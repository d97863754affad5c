"""The duration sentence of the R4D prompt, pinned: the official code's number formatting is not public (its
`get_video_length` helper is not in the released code), so the SDK's one-decimal rule is fixed here."""
from __future__ import annotations

import pytest

from rgpt4d_sdk.prompt.template import PromptConfig, format_seconds, r4d_text


@pytest.mark.parametrize("seconds, text", [
    (1.25, "1.2"),  # exactly halfway in binary: round half to even
    (1.35, "1.4"),  # 1.35 is 1.3500000000000000888 in binary: rounds up
    (1.3333, "1.3"), (4.0, "4"), (4.96, "5"), (0.04, "0"), (7.5, "7.5"), (12.05, "12.1"), (100.0, "100"),
])
def test_one_decimal_is_pinned(seconds, text):
    assert format_seconds(seconds) == text


def test_the_sentence_in_the_prompt():
    text = r4d_text("How fast is <obj_1> moving?", ["0 m/s", "5 m/s"], 1.25, "choice", PromptConfig())
    assert text.startswith("These images are uniformly sampled from a video of 1.2 seconds.\nHow fast is <obj_1>")
    assert "\nOptions: \n(A) 0 m/s\n(B) 5 m/s\n" in text
    two = r4d_text("Q?", [], 1.25, "text", PromptConfig(duration_decimals=2))
    assert two.startswith("These images are uniformly sampled from a video of 1.25 seconds.")
