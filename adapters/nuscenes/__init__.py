"""nuScenes logs as region queries with ground truth.

`source.NuScenesSource` opens a dataroot with the official devkit (the optional ``[nuscenes]`` extra), cuts each
camera's frames into clips, marks objects visible on each clip's first frame, and hands out their 3D tracks so that
`rgpt4d_sdk.eval.questions` can ask questions whose answers are known. `sample` writes small nuScenes-format logs
with known motion (the embedded default and the tests).
"""
