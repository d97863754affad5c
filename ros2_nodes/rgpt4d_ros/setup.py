"""ament_python package of the rgpt4d region-query node (colcon build). The node's code lives in rgpt4d-sdk."""
from glob import glob

from setuptools import setup

PACKAGE = "rgpt4d_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="rgpt4d-sdk maintainers",
    description="Lifecycle node answering region-level 4D questions about recent camera frames.",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"region_query_node = {PACKAGE}.main:main"]},
)
