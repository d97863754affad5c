"""`rgpt4d-sdk ros ...`: build the interface package from the `ros-*` wheels, and run the node without colcon."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..cli_common import fail as _fail
from ..cli_grammar import App

ros_app = App(no_args_is_help=True, help="ROS 2: build the interfaces (pip wheels) and serve region queries.")


@ros_app.command("build-interfaces")
def build_interfaces_cmd(
    prefix: Optional[Path] = typer.Option(None, metavar="DIR", help="Install prefix (default: this Python's, where rclpy is)."),
    force: bool = typer.Option(False, help="Rebuild even when the installed interfaces match the sources."),
) -> None:
    """Build rgpt4d_interfaces (msg/srv/action) with CMake against the ros-* wheels and install it."""
    from .build import InterfaceBuildError, build_interfaces

    try:
        build_interfaces(prefix, force=force, log=typer.echo)
    except InterfaceBuildError as e:
        _fail(e)


def _split(values: List[str]) -> List[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def ros_arguments(model: str, cameras: List[str], camera_info: List[str], params_file: Optional[Path], name: str,
                  namespace: str, overrides: dict) -> List[str]:
    """The ``--ros-args`` list for rclpy.init: remaps, the parameter file, then -p overrides (which win)."""
    args = ["--ros-args", "-r", f"__node:={name}"]
    if namespace:
        args += ["-r", f"__ns:={namespace if namespace.startswith('/') else '/' + namespace}"]
    if params_file is not None:
        if not params_file.is_file():
            raise FileNotFoundError(f"parameter file {params_file} does not exist.")
        args += ["--params-file", str(params_file)]
    values = dict(overrides)
    if model:
        values["model"] = model
    if cameras:
        values["cameras"] = _split(cameras)
    if camera_info:
        values["camera_info_topics"] = _split(camera_info)
    for key, value in values.items():
        if isinstance(value, list):
            text = "[" + ",".join("'" + v.replace("'", "") + "'" for v in value) + "]"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        args += ["-p", f"{key}:={text}"]
    return args


@ros_app.command("serve", deprecated={"--cameras": "--camera"})
def serve(
    model: str = typer.Option("", metavar="DIR", help="Checkpoint folder in the released layout (or a hub id)."),
    camera: List[str] = typer.Option([], metavar="NAME=TOPIC", help="NAME=IMAGE_TOPIC (repeatable or comma-separated); a topic ending "
                                               "in /compressed is a CompressedImage topic."),
    camera_info: List[str] = typer.Option([], metavar="NAME=TOPIC", help="NAME=TOPIC: CameraInfo topic override (default: beside the "
                                                   "image topic)."),
    params_file: Optional[Path] = typer.Option(None, metavar="FILE", help="ROS 2 parameter YAML (see ros2_nodes/rgpt4d_ros/config)."),
    name: str = typer.Option("rgpt4d", metavar="NAME", help="Node name."),
    namespace: str = typer.Option("", metavar="NAMESPACE", help="Node namespace."),
    queue_depth: Optional[int] = typer.Option(None, metavar="N", help="Goals admitted at once (running included)."),
    buffer_frames: Optional[int] = typer.Option(None, metavar="N", help="Frames kept per camera."),
    buffer_seconds: Optional[float] = typer.Option(None, metavar="S", help="Seconds kept per camera."),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: auto)"),
    dtype: Optional[str] = typer.Option(None, metavar="DTYPE", help="auto | float32 | bfloat16 | float16 (default: "
                                                                    "auto)"),
    backend: Optional[str] = typer.Option(None, metavar="BACKEND", help="torch | onnxruntime | tensorrt"),
    compiled: Optional[Path] = typer.Option(None, metavar="DIR", help="Export (onnxruntime) or engine (tensorrt) folder; loaded on "
                                                       "configure, never built."),
    undistort: Optional[bool] = typer.Option(None, "--undistort/--no-undistort", help="Undistort with CameraInfo."),
    use_sim_time: Optional[bool] = typer.Option(None, "--use-sim-time/--no-sim-time", help="Follow /clock."),
    verify_digests: Optional[bool] = typer.Option(None, "--verify-digests", help="Hash the compiled model's files "
                                                  "afresh instead of trusting the digest cache."),
    preencode: Optional[str] = typer.Option(None, metavar="MODE", help="Encode frames as they arrive: auto (on with a GPU) | on | "
                                                       "off."),
    preencode_stride: Optional[int] = typer.Option(None, help="Pre-encode every k-th frame (1 every frame, 0 "
                                                              "adaptive to load)."),
    preencode_cache_mb: Optional[float] = typer.Option(None, help="Budget of the pre-encoded frames' cache (MB)."),
    prefix_cache_mb: Optional[float] = typer.Option(None, help="Budget of the prompt-prefix KV cache kept across "
                                                               "goals (MB; 0 disables)."),
    vision_cache_mb: Optional[float] = typer.Option(None, help="Budget of the engine's vision cache (MB; 0 disables)."),
    autostart: bool = typer.Option(True, help="Configure and activate at start (else wait for lifecycle calls)."),
) -> None:
    """Run the region-query lifecycle node (action ~/region_query, service ~/get_status, /diagnostics)."""
    overrides = {k: v for k, v in dict(queue_depth=queue_depth, buffer_frames=buffer_frames,
                                       buffer_seconds=buffer_seconds, device=device, dtype=dtype,
                                       backend=backend, compiled=None if compiled is None else str(compiled),
                                       undistort=undistort, use_sim_time=use_sim_time,
                                       verify_digests=verify_digests, preencode=preencode,
                                       preencode_stride=preencode_stride, preencode_cache_mb=preencode_cache_mb,
                                       prefix_cache_mb=prefix_cache_mb,
                                       vision_cache_mb=vision_cache_mb).items() if v is not None}
    if not camera and params_file is None:
        _fail(RuntimeError("no camera given; name each one as --camera NAME=IMAGE_TOPIC, e.g. "
                           "--camera front=/cam_front/image_raw/compressed (repeatable), or pass --params-file."))
    try:
        args = ros_arguments(model, camera, camera_info, params_file, name, namespace, overrides)
    except FileNotFoundError as e:
        _fail(e)
    try:
        from .node import main
    except ImportError as e:
        _fail(RuntimeError(f"ROS 2 is not importable ({e}); install `pip install \"rgpt4d-sdk[ros2]\"` and run "
                           "`rgpt4d-sdk ros build-interfaces`, or source your ROS 2 setup."))
    raise typer.Exit(code=main(["rgpt4d-sdk", *args], autostart=autostart))
