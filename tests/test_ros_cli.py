"""`rgpt4d-sdk ros serve` as users run it (a child process over loopback DDS), the interface build command, and
the colcon package files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ros_harness import PERIOD_NS, T0_NS, require_ros, served_node

ROOT = Path(__file__).resolve().parent.parent
ROS2_NODES = ROOT / "ros2_nodes"


def test_ros_arguments_build_remaps_params_file_and_overrides(tmp_path):
    from rgpt4d_sdk.ros.cli import ros_arguments

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters: {queue_depth: 3}\n")
    args = ros_arguments("/m", ["a=/x/image_raw,b=/y/image_raw/compressed"], [], params, "n", "robot",
                         {"queue_depth": 1, "undistort": True})
    assert args[:5] == ["--ros-args", "-r", "__node:=n", "-r", "__ns:=/robot"]
    assert args[5:7] == ["--params-file", str(params)]
    p = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    assert p == ["queue_depth:=1", "undistort:=true", "model:=/m",
                 "cameras:=['a=/x/image_raw','b=/y/image_raw/compressed']"]
    with pytest.raises(FileNotFoundError):
        ros_arguments("/m", [], [], tmp_path / "missing.yaml", "n", "", {})


def test_serve_with_a_missing_params_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", "ros", "serve", "--params-file",
                           str(tmp_path / "none.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_package_files_are_valid_ament_packages():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    iface = catkin_pkg.parse_package(str(ROS2_NODES / "rgpt4d_interfaces"))
    node = catkin_pkg.parse_package(str(ROS2_NODES / "rgpt4d_ros"))
    assert iface.get_build_type() == "ament_cmake" and node.get_build_type() == "ament_python"
    assert "rosidl_interface_packages" in [g.name for g in iface.member_of_groups]
    deps = {d.name for d in iface.build_depends + iface.exec_depends + iface.buildtool_depends}
    assert deps <= {"ament_cmake", "rosidl_default_generators", "rosidl_default_runtime", "builtin_interfaces",
                    "sensor_msgs", "action_msgs"}  # standard packages only
    compile((ROS2_NODES / "rgpt4d_ros" / "launch" / "rgpt4d.launch.py").read_text(), "launch", "exec")


def test_params_yaml_names_exactly_the_node_parameters():
    require_ros()
    import yaml

    from rgpt4d_sdk.ros.node import PARAMETERS

    params = yaml.safe_load((ROS2_NODES / "rgpt4d_ros" / "config" / "rgpt4d.yaml").read_text())
    assert set(params["/**"]["ros__parameters"]) == set(PARAMETERS)


def test_patch_exported_includes_rewrites_foreign_python_paths(tmp_path):
    from rgpt4d_sdk.ros.build import local_includes, patch_exported_includes

    cmake = tmp_path / "share" / "pkg" / "cmake"
    cmake.mkdir(parents=True)
    f = cmake / "export_pkg__rosidl_generator_pyExport.cmake"
    f.write_text('INTERFACE_INCLUDE_DIRECTORIES "/opt/python/cp311-cp311/include/python3.11;'
                 '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"\n')
    other = cmake / "pkgConfig.cmake"
    other.write_text("/opt/python/cp311-cp311/include/python3.11\n")
    assert patch_exported_includes(tmp_path) == [f]
    inc = local_includes()
    assert f.read_text() == f'INTERFACE_INCLUDE_DIRECTORIES "{inc["python"]};{inc["numpy"]}"\n'
    assert "/opt/python" in other.read_text()  # only exported target files are touched
    assert patch_exported_includes(tmp_path) == []


def test_build_interfaces_is_a_no_op_when_up_to_date():
    require_ros()
    proc = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", "ros", "build-interfaces"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


def test_build_interfaces_names_missing_wheels(tmp_path):
    from rgpt4d_sdk.ros.build import InterfaceBuildError, check_prerequisites

    with pytest.raises(InterfaceBuildError, match=r"rgpt4d-sdk\[ros2\]"):
        check_prerequisites(tmp_path)


def test_serve_answers_a_goal_and_stops_on_sigint(tiny_ckpt_dir, tmp_path):
    require_ros()
    from rgpt4d_interfaces.action import RegionQuery
    from rgpt4d_interfaces.msg import Region

    with served_node(tiny_ckpt_dir, tmp_path / "node.log", "rgpt4d_cli", "/cli/image_raw/compressed") as served:
        goal = RegionQuery.Goal(camera="cam", question="Where is <obj_1> going?", num_frames=4, duration_s=0.3)
        goal.regions = [Region(id=1, kind=Region.KIND_BOX, box=[10.0, 10.0, 40.0, 30.0])]
        out = served.ask(goal)
        assert out.code == 0, out.reason
        stamps = [t.sec * 1_000_000_000 + t.nanosec for t in out.stamps]
        assert stamps == [T0_NS + k * PERIOD_NS for k in (0, 3, 6, 9)]
        assert out.engine.startswith("torch")
    assert served.returncode == 0, served.log.read_text()[-3000:]
    assert "active" in served.log.read_text()


def test_serve_started_with_sigint_ignored_still_stops_on_sigint(tiny_ckpt_dir, tmp_path):
    """A shell's `&` (job control off) starts children with SIGINT ignored, and Python keeps it ignored: the node
    turns it back on, so `kill -INT` still drains and exits (before the fix it hung until killed)."""
    require_ros()
    with served_node(tiny_ckpt_dir, tmp_path / "node.log", "rgpt4d_bg", "/bg/image_raw/compressed",
                     sigint_ignored=True) as served:
        assert served.status_reply().active
    assert served.returncode == 0, served.log.read_text()[-3000:]
    assert "interrupted: ending the goals in flight" in served.log.read_text()


def test_colcon_builds_both_packages(tmp_path):
    """The colcon path Jetson users take (against apt ROS there; against the ros-* wheels here)."""
    require_ros()
    import os
    import shutil

    colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed (pip install colcon-common-extensions)")
    src = tmp_path / "ws" / "src"
    for pkg in ("rgpt4d_interfaces", "rgpt4d_ros"):
        shutil.copytree(ROS2_NODES / pkg, src / pkg)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix)
    proc = subprocess.run([colcon, "build", "--event-handlers", "console_direct-"], cwd=tmp_path / "ws", env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    install = tmp_path / "ws" / "install"
    assert (install / "rgpt4d_ros" / "lib" / "rgpt4d_ros" / "region_query_node").is_file()
    assert (install / "rgpt4d_ros" / "share" / "rgpt4d_ros" / "launch" / "rgpt4d.launch.py").is_file()
    assert list((install / "rgpt4d_interfaces").rglob("rgpt4d_interfaces/action/_region_query.py"))


def test_serve_with_a_bad_model_says_why_and_exits_1(tmp_path):
    require_ros()
    proc = subprocess.run([sys.executable, "-m", "rgpt4d_sdk.cli", "ros", "serve", "--model", str(tmp_path / "none"),
                           "--camera", "a=/bad/image_raw", "--name", "rgpt4d_bad"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "configure failed: CheckpointError" in proc.stderr + proc.stdout and "does not exist" in proc.stderr
