"""Source adapters (nuScenes, RoboFAC, rosbag2, R4D-Bench) that turn logs into RegionQuery objects.

Installed as `rgpt4d_sdk.adapters`. Each adapter imports its optional dependency lazily."""
