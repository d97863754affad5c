"""Cameras, poses, projection and clock offsets. Installed as `rgpt4d_sdk.calib`."""
