"""rgpt4d-sdk: one distribution, one import namespace.

The top-level folders adapters/, calib/ and training/ are installed as rgpt4d_sdk.adapters, rgpt4d_sdk.calib and
rgpt4d_sdk.training (package_dir), so they never collide with unrelated PyPI packages of the same generic names.
"""
from setuptools import setup

CORE = [
    "rgpt4d_sdk", "rgpt4d_sdk.model", "rgpt4d_sdk.engine", "rgpt4d_sdk.prompt", "rgpt4d_sdk.eval", "rgpt4d_sdk.analyze",
]
MAPPED = {
    "rgpt4d_sdk.adapters": "adapters",
    "rgpt4d_sdk.adapters.nuscenes": "adapters/nuscenes",
    "rgpt4d_sdk.calib": "calib",
    "rgpt4d_sdk.training": "training",
}

extras = {
    # The devkit pins numpy<2; pyarrow 24+ needs numpy 2 at import, so parquet output is capped below it.
    "nuscenes": ["nuscenes-devkit>=1.1", "pyarrow>=14,<24"],
    "ros2": ["rosbags>=0.9"],
    "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
    "tensorrt": ["tensorrt>=10.0"],
    "train": ["peft>=0.10", "accelerate>=0.30"],
    "ray": ["ray[data]>=2.9"],
    "test": ["pytest>=7.4", "setuptools>=64", "wheel", "nuscenes-devkit>=1.1", "pyarrow>=14,<24"],
}
extras["all"] = sorted({r for k, v in extras.items() if k not in ("tensorrt", "test") for r in v})

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
    package_data={"rgpt4d_sdk": ["configs/*.yaml"]},
    install_requires=[
        "torch>=2.1",
        "transformers>=4.46",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "huggingface-hub>=0.23",
        "numpy>=1.24",
        "pillow>=10.1",
        "av>=11",
        "typer>=0.9",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require=extras,
    entry_points={"console_scripts": ["rgpt4d-sdk=rgpt4d_sdk.cli:main"]},
)
