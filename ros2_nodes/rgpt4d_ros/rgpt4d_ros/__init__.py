"""colcon entry point for the rgpt4d region-query node (the implementation is `rgpt4d_sdk.ros.node`)."""
