"""Launch the rgpt4d region-query lifecycle node, then configure and activate it.

    ros2 launch rgpt4d_ros rgpt4d.launch.py model:=/models/4D-RGPT-8B params_file:=/path/rgpt4d.yaml

Configure loads the engine (it never builds one); if it fails, the node stays unconfigured and says why.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("rgpt4d_ros"), "config", "rgpt4d.yaml")
    node = LifecycleNode(
        package="rgpt4d_ros", executable="region_query_node", name=LaunchConfiguration("name"), namespace="",
        parameters=[LaunchConfiguration("params_file"), {"model": LaunchConfiguration("model"),
                                                         "use_sim_time": LaunchConfiguration("use_sim_time")}],
        additional_env={"RGPT4D_AUTOSTART": "0"}, output="screen")
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    return LaunchDescription([
        DeclareLaunchArgument("model", description="checkpoint folder in the released layout"),
        DeclareLaunchArgument("params_file", default_value=default_params),
        DeclareLaunchArgument("name", default_value="rgpt4d"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        activate, node, configure,
    ])
