"""rgpt4d-sdk: region-level 4D video question answering with 4D-RGPT (NVILA-Lite + TPE).

    from rgpt4d_sdk import Engine, RegionQuery, Region, Clip
    engine = Engine.from_pretrained("/models/4D-RGPT-8B")
    answer = engine.answer(RegionQuery(Clip.from_video("drive.mp4"), [Region(1, box=(410, 220, 520, 300))],
                                       "How fast is <obj_1> moving?", options=["0 m/s", "4 m/s", "9 m/s"]))

The core imports no optional runtime (nuscenes, rclpy, onnxruntime, tensorrt, ray); torch and transformers are
imported when an engine is built.
"""
from . import media as _media  # noqa: F401  (registers the file readers behind Clip.from_video/from_image_folder)
from .errors import RGPT4DError
from .types import Answer, Clip, Frame, Region, RegionQuery

__version__ = "0.1.0"
__all__ = ["Answer", "Clip", "Engine", "Frame", "Region", "RegionQuery", "RGPT4DError", "__version__"]


def __getattr__(name):
    # Engine pulls in torch; keep `import rgpt4d_sdk` light for adapters and tools that only build queries.
    if name == "Engine":
        from .engine.base import Engine

        return Engine
    raise AttributeError(f"module 'rgpt4d_sdk' has no attribute {name!r}")
