"""ROS bags (rosbag2 sqlite3/mcap folders and ROS 1 .bag files) as region queries for `rgpt4d-sdk analyze rosbag`.

`queries` reads the queries file (one region question per entry, with the window of header stamps it is about and
an optional truth); `bag` indexes camera topics by ``header.stamp`` and reads only the frames a query picks, with
`rosbags` (the optional ``[rosbag]`` extra); `source.RosbagSource` serves each query as a work unit of the runner.
"""
