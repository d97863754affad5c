"""The ROS 2 packages (rgpt4d_interfaces, rgpt4d_ros), shipped as data so `rgpt4d-sdk ros build-interfaces` can
build them from an installed SDK. colcon users build this folder directly; nothing here is imported."""
