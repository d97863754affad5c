"""R4D-Bench records (HF nvidia/R4D-Bench layout): region-level 4D multiple-choice items with SoM images."""
from .query import DEFAULT_FRAMES, build_query
from .records import (
    CATEGORIES, REASONS, RECORD_FILES, TASK_NAMES, TASKS, ItemError, R4DItem, RecordError, find_record_files,
    load_records, task_of,
)

__all__ = [
    "CATEGORIES", "DEFAULT_FRAMES", "REASONS", "RECORD_FILES", "TASK_NAMES", "TASKS", "ItemError", "R4DItem",
    "RecordError", "build_query", "find_record_files", "load_records", "task_of",
]
