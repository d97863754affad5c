"""RoboFAC episodes (HF MINT-SJTU/RoboFAC-dataset layout): videos and failure-analysis QA as region queries.

`dataset.RoboFACDataset` reads the released QA tables and resolves each item's video; `RoboFACItem.to_query`
decodes the video (PTS in seconds) into a `RegionQuery`. `regions` reads the optional region file (boxes, polygons,
COCO RLE masks on a stamped frame) that adds SoM marks. Scoring lives in `rgpt4d_sdk.eval.robofac`.
"""
from .dataset import SPLITS, RoboFACDataset, RoboFACItem
from .regions import RegionEntry, StampError, decode_rle, load_region_file

__all__ = ["SPLITS", "RegionEntry", "RoboFACDataset", "RoboFACItem", "StampError", "decode_rle", "load_region_file"]
