"""ROS 2 integration: the region-query lifecycle node and the interface build for pip (`ros-*` wheel) installs.

Importing this package does not import rclpy; `rgpt4d_sdk.ros.node` does. The node only adapts ROS messages,
parameters, QoS and lifecycle to `rgpt4d_sdk.live`, where buffering, window selection and answering live.
"""
