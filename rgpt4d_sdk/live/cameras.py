"""Camera specs from the node's `cameras` parameter: ``NAME=IMAGE_TOPIC`` strings.

A topic ending in ``/compressed`` carries `sensor_msgs/CompressedImage`, any other `sensor_msgs/Image`. The
CameraInfo topic follows the image_transport convention (``/ns/image_raw[/compressed]`` -> ``/ns/camera_info``)
unless it is given explicitly (``NAME=TOPIC`` entries of `camera_info_topics`; an empty topic disables it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence

from ..errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CameraSpec:
    """One camera the node listens to: its name in goals, its image topic, whether that topic carries
    CompressedImage, and its CameraInfo topic ("" when there is none)."""

    name: str
    topic: str
    compressed: bool
    info_topic: str  # "" = no CameraInfo


# image_transport suffixes: /cam/image_raw/compressed is the compressed form of /cam/image_raw.
TRANSPORTS = ("compressed", "theora", "ffmpeg", "zstd")


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic drivers publish beside an image topic: /cam/image_raw[/compressed] -> /cam/camera_info."""
    parts = image_topic.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] and parts[-1] in TRANSPORTS:
        parts = parts[:-1]
    return "/".join(parts[:-1] + ["camera_info"])


def _pairs(entries: Sequence[str], what: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for e in entries:
        name, sep, topic = str(e).partition("=")
        name, topic = name.strip(), topic.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ConfigError(f"{what} entry {e!r} must look like NAME=TOPIC (e.g. front=/cam_front/image_raw).")
        if name in out:
            raise ConfigError(f"{what} names camera {name!r} twice.")
        out[name] = topic
    return out


def parse_cameras(cameras: Sequence[str], info_topics: Sequence[str] = ()) -> List[CameraSpec]:
    """``["front=/cam_front/image_raw/compressed", ...]`` -> camera specs (checked: names unique, topics set)."""
    cams = _pairs([c for c in cameras if str(c).strip()], "cameras")
    if not cams:
        raise ConfigError("no camera configured; give one with `rgpt4d-sdk ros serve --camera "
                          "front=/cam_front/image_raw/compressed` (repeatable), or, with ros2 run/launch, the "
                          "`cameras` parameter: cameras:=['front=/cam_front/image_raw/compressed'].")
    infos = _pairs([c for c in info_topics if str(c).strip()], "camera_info_topics")
    unknown = sorted(set(infos) - set(cams))
    if unknown:
        raise ConfigError(f"camera_info_topics names cameras {unknown} that are not in `cameras` ({sorted(cams)}).")
    specs = []
    for name, topic in cams.items():
        if not topic:
            raise ConfigError(f"camera {name!r} has an empty topic.")
        specs.append(CameraSpec(name, topic, topic.endswith("/compressed"), infos.get(name, camera_info_topic(topic))))
    return specs
