"""`ros2 run rgpt4d_ros region_query_node --ros-args --params-file ...`: the node, managed by lifecycle calls.

Unlike `rgpt4d-sdk ros serve`, this entry point does not configure and activate by itself unless the parameter
file or the launch file asks for it: launch files drive the lifecycle (see launch/rgpt4d.launch.py).
"""
import os
import sys


def main() -> int:
    from rgpt4d_sdk.ros.node import main as node_main

    autostart = os.environ.get("RGPT4D_AUTOSTART", "1") not in ("0", "false", "False")
    return node_main(sys.argv, autostart=autostart)


if __name__ == "__main__":
    sys.exit(main())
