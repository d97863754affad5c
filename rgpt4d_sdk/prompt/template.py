"""Prompt text: the plain NVILA video-QA prompt and the R4D-Bench region prompt, inside the Qwen2 chat template.

The user turn starts with one ``<image>`` per image (no separator), then the text. In R4D mode the SoM image comes
first, then the frames (the official eval passes ``Image(som)``, then ``Video(video)``, then the text).

Two R4D text styles exist in the official code:
- "nvila_eval" (default; the paper's protocol): "These images are uniformly sampled from a video of {s} seconds.\\n"
  + question + "\\nOptions: \\n(A) ...\\n(B) ..." + "\\n" + instruction. Dropping the duration sentence costs ~3 points.
- "lmms_eval": SoM preamble, question, "Options:\\n(A) ...", instruction, joined by blank lines; no duration.
The instruction text of the first style lives in a helper we could not read; we use the second style's verified
sentence for both, and it is a config value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..config import from_mapping
from ..errors import ConfigError

IMAGE_TOKEN = "<image>"
STYLES = ("nvila_eval", "lmms_eval")
CHOICE_INSTRUCTION = "Answer with only the letter of the correct option."
NUMBER_INSTRUCTION = "Answer with a single number and its unit."
SOM_PREAMBLE = (
    "The first image is a set-of-mark annotation of a key frame from the video, with bounding boxes labeled "
    "<obj_1>, <obj_2>, etc. References to <obj_N> in the question correspond to those labeled regions."
)
# Qwen2 ChatML, used only when the tokenizer carries no chat template of its own (no period after "assistant").
QWEN2_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}"
    "{% endif %}{% for message in messages if message['content'] is not none %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass
class PromptConfig:
    """How R4D-mode text is written. ``duration_decimals`` formats the clip length ("4.5 seconds")."""

    style: str = "nvila_eval"
    duration_sentence: bool = True
    duration_decimals: int = 1
    choice_instruction: str = CHOICE_INSTRUCTION
    number_instruction: str = NUMBER_INSTRUCTION
    text_instruction: str = ""

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"prompt style {self.style!r} is unknown; choose one of {STYLES}.")
        if not (0 <= int(self.duration_decimals) <= 6):
            raise ConfigError(f"duration_decimals must be 0..6, got {self.duration_decimals}.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PromptConfig":
        """A `PromptConfig` from a mapping (a config file's ``prompt`` section); unknown keys and wrong types raise
        ConfigError."""
        return from_mapping(cls, d, "prompt")


def option_letter(i: int) -> str:
    """The letter of the ``i``-th option: 0 -> "A", 1 -> "B", ..."""
    return chr(ord("A") + i)


def format_seconds(seconds: float, decimals: int = 1) -> str:
    """4.0 -> "4", 1.25 -> "1.2", 1.35 -> "1.4", 4.96 -> "5"; never scientific notation.

    Python's ``f"{x:.1f}"`` of the binary value (round half to even where the value is exactly halfway, as 1.25
    is), then trailing zeros dropped. The official sentence (NVlabs/4D-RGPT, the R4D-Bench datamodule's
    ``inference``: ``f"These images are uniformly sampled from a video of {video_sec} seconds."``) prints the value
    of its ``get_video_length`` helper, whose code is not public, so its rounding is unknown; one decimal is our
    choice, pinned by tests/test_prompt_duration.py. See docs/scoring.md.
    """
    text = f"{seconds:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def options_block(options: Sequence[str], style: str) -> str:
    """The options part of a multiple-choice prompt: "Options:" and one "(A) text" line per option. The
    "nvila_eval" ``style`` writes "Options: " with a trailing space, as the official evaluation prompt does."""
    lines = "\n".join(f"({option_letter(i)}) {o}" for i, o in enumerate(options))
    return ("Options: \n" if style == "nvila_eval" else "Options:\n") + lines


def r4d_text(
    question: str, options: Sequence[str], duration_s: float, answer_type: str, cfg: PromptConfig
) -> str:
    """The text part of an R4D-Bench prompt (after the image tokens)."""
    instruction = {
        "choice": cfg.choice_instruction, "number": cfg.number_instruction, "text": cfg.text_instruction
    }[answer_type]
    if cfg.style == "lmms_eval":
        parts = [SOM_PREAMBLE, question]
        if options:
            parts.append(options_block(options, cfg.style))
        if instruction:
            parts.append(instruction)
        return "\n\n".join(parts)
    text = question
    if cfg.duration_sentence:
        text = (
            f"These images are uniformly sampled from a video of "
            f"{format_seconds(duration_s, cfg.duration_decimals)} seconds.\n" + text
        )
    if options:
        text += "\n" + options_block(options, cfg.style)
    if instruction:
        text += "\n" + instruction
    return text


def user_content(num_images: int, text: str) -> str:
    """``<image>`` per image, then the text directly (the official layout has no separator)."""
    return IMAGE_TOKEN * num_images + text


def chat_prompt(tokenizer, content: str, system: "str | None" = None) -> str:
    """The full prompt string: the tokenizer's own chat template (Qwen2 ChatML as fallback), generation prompt on."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    template = getattr(tokenizer, "chat_template", None) or QWEN2_TEMPLATE
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)


def query_text(query: Any, prompt: PromptConfig) -> str:
    """The user text after the image tokens for a `RegionQuery`: the R4D protocol text in "r4d" mode, else the
    question with its option lines (NVILA video QA). The engine and the training-conversation export share it."""
    if query.prompt_mode == "r4d":
        return r4d_text(query.question, query.options, query.clip.duration_s, query.answer_type, prompt)
    text = query.question
    if query.options:
        text += "\n" + "\n".join(f"({option_letter(i)}) {o}" for i, o in enumerate(query.options))
    return text
