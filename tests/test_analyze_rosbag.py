"""`analyze rosbag` on bags written with `rosbags` (rosbag2 sqlite3 and mcap, ROS 1): frames chosen by header stamp
while receive times are shuffled, CameraInfo undistortion, bad queries as error rows with reason codes, resume,
shards, and bad bags or query files rejected before any work."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rgpt4d_sdk.adapters.rosbag.bag import header_stamp_ns
from rgpt4d_sdk.adapters.rosbag.queries import load_queries, parse_stamp
from rgpt4d_sdk.adapters.rosbag.source import RosbagConfig, RosbagSource
from rgpt4d_sdk.live.cameras import camera_info_topic
from rgpt4d_sdk.analyze.config import AnalyzeConfig
from rgpt4d_sdk.analyze.report import referenced_media
from rgpt4d_sdk.analyze.runner import merge_shards, run_analysis
from rgpt4d_sdk.calib import CameraModel
from rgpt4d_sdk.errors import ConfigError, DatasetError

rosbags = pytest.importorskip("rosbags")
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer as Writer2  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

NS = 1_000_000_000
T0 = 1_700_000_000_123_456_789  # header stamp of frame 0 (ns)
PERIOD = 100_000_000  # 10 Hz
N = 30
W, H = 64, 48
K = [60.0, 0.0, 32.0, 0.0, 60.0, 24.0, 0.0, 0.0, 1.0]
P = [60.0, 0.0, 32.0, 0.0, 0.0, 60.0, 24.0, 0.0, 0.0, 0.0, 1.0, 0.0]
INFOS = ((0, (-0.25, 0.06, 0.002, -0.001, 0.0)), (25, (-0.1, 0.01, 0.0, 0.0, 0.0)))  # (frame, plumb_bob D)
DUPLICATE = 12  # a second message with frame 12's stamp is recorded later: it must be ignored
KINDS = {"sqlite3": "/cam/image_raw", "mcap": "/cam/image_raw/compressed", "ros1": "/cam/image_raw"}


def stamp(i: int) -> int:
    return T0 + i * PERIOD


def sec_frac(ns: int) -> str:
    return f"{ns // NS}.{ns % NS:09d}"


def frame_rgb(i: int, blue: "int | None" = None) -> np.ndarray:
    """Gradients in red and green (so undistortion changes pixels); blue (default 10 + 8 i) names the frame."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (np.arange(W) * 4)[None, :]
    img[..., 1] = (np.arange(H) * 5)[:, None]
    img[..., 2] = 10 + 8 * i if blue is None else blue
    return img


def _header(ts, ns: int, ros1: bool):
    T, Hd = ts.types["builtin_interfaces/msg/Time"], ts.types["std_msgs/msg/Header"]
    extra = {"seq": 0} if ros1 else {}
    return Hd(stamp=T(sec=ns // NS, nanosec=ns % NS), frame_id="cam", **extra)


def _image(ts, kind: str, ns: int, rgb: np.ndarray):
    ros1 = kind == "ros1"
    if kind == "mcap":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
        msg = ts.types["sensor_msgs/msg/CompressedImage"](
            header=_header(ts, ns, ros1), format="rgb8; jpeg compressed bgr8",
            data=np.frombuffer(buf.getvalue(), np.uint8))
        return msg, "sensor_msgs/msg/CompressedImage"
    enc, px = ("bgr8", rgb[:, :, ::-1]) if ros1 else ("rgb8", rgb)
    step = W * 3 + 4  # padded rows
    data = np.zeros((H, step), np.uint8)
    data[:, : W * 3] = np.ascontiguousarray(px).reshape(H, W * 3)
    msg = ts.types["sensor_msgs/msg/Image"](header=_header(ts, ns, ros1), height=H, width=W, encoding=enc,
                                            is_bigendian=0, step=step, data=data.ravel())
    return msg, "sensor_msgs/msg/Image"


def _info(ts, ns: int, d, ros1: bool):
    fields = dict(header=_header(ts, ns, ros1), height=H, width=W, distortion_model="plumb_bob",
                  binning_x=0, binning_y=0, roi=ts.types["sensor_msgs/msg/RegionOfInterest"](
                      x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    mats = dict(d=np.array(d), k=np.array(K), r=np.eye(3).ravel(), p=np.array(P))
    fields.update({k.upper() if ros1 else k: v for k, v in mats.items()})
    return ts.types["sensor_msgs/msg/CameraInfo"](**fields)


def write_bag(root: Path, kind: str) -> Path:
    """N frames at 10 Hz, received 5-250 ms after their stamp (so out of order), one late duplicate stamp, and two
    CameraInfo messages; written in receive-time order, as a recorder does. The sqlite3 bag has a second camera."""
    ros1 = kind == "ros1"
    ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    ser = ts.serialize_ros1 if ros1 else ts.serialize_cdr
    rng = np.random.default_rng(7)
    records = []  # (received, topic, msgtype, message)
    for i in range(N):
        msg, msgtype = _image(ts, kind, stamp(i), frame_rgb(i))
        records.append((stamp(i) + int(rng.integers(5, 250)) * 1_000_000, KINDS[kind], msgtype, msg))
    dup, msgtype = _image(ts, kind, stamp(DUPLICATE), frame_rgb(DUPLICATE, blue=3))
    records.append((stamp(DUPLICATE) + 400_000_000, KINDS[kind], msgtype, dup))
    if kind == "sqlite3":  # a second camera, without CameraInfo, for queries that name their own camera
        for i in range(5):
            msg, msgtype = _image(ts, kind, stamp(i) + PERIOD // 2, frame_rgb(i, blue=200))
            records.append((stamp(i) + PERIOD // 2 + 1_000_000, "/cam2/image_raw", msgtype, msg))
    for frame, d in INFOS:
        records.append((stamp(frame) + 2_000_000, "/cam/camera_info", "sensor_msgs/msg/CameraInfo",
                        _info(ts, stamp(frame), d, ros1)))
    records.sort(key=lambda r: r[0])
    path = root / ("bag.bag" if ros1 else f"bag_{kind}")
    writer = Writer1(path) if ros1 else Writer2(path, version=9, storage_plugin=(
        StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3))
    with writer:
        conns = {}
        for received, topic, msgtype, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], received, ser(msg, msgtype))
    return path


QUERIES = [
    {"id": "last-second", "question": "How fast is <obj_1> moving?", "options": ["0 m/s", "1 m/s", "2 m/s", "4 m/s"],
     "truth": "B", "task": "speed", "regions": [{"id": 1, "box": [10, 10, 40, 30], "label": "car"}],
     "window": {"num_frames": 6, "duration_s": 1.0}},
    {"id": "ends-at-20", "question": "How far is <obj_1> from the camera?", "answer_type": "number", "truth": 1250,
     "unit": "cm", "task": "distance", "regions": [{"id": 1, "polygon": [[5, 5], [30, 8], [20, 30]]}],
     "window": {"num_frames": 4, "duration_s": 0.3, "end": sec_frac(stamp(20))}},
    {"id": "from-reference", "question": "Describe <obj_1>.", "regions": [{"id": 1, "box": [2, 2, 20, 20]}],
     "window": {"num_frames": 5, "reference": stamp(10), "end": stamp(14) / NS}},
    {"id": "outside", "question": "Is <obj_1> moving?", "options": ["yes", "no"],
     "regions": [{"id": 1, "box": [500, 500, 600, 600]}]},
    {"id": "missing-region", "question": "Is <obj_1> nearer than <obj_2>?", "options": ["yes", "no"],
     "regions": [{"id": 1, "box": [1, 1, 10, 10]}]},
    {"id": "future", "question": "What is <obj_1>?", "regions": [{"id": 1, "box": [1, 1, 10, 10]}],
     "window": {"end": sec_frac(stamp(N - 1) + NS)}},
]
# The frames each served query must use (by header stamp), and the reason code of each refused one.
EXPECTED = {"last-second": [19, 21, 23, 25, 27, 29], "ends-at-20": [17, 18, 19, 20],
            "from-reference": [10, 11, 12, 13, 14]}
ERRORS = {"outside": "REGION_OUTSIDE_IMAGE", "missing-region": "MISSING_REGION", "future": "END_STAMP_IN_FUTURE"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    for kind in KINDS:
        write_bag(root, kind)
    (root / "queries.yaml").write_text(yaml.safe_dump({"queries": QUERIES}, sort_keys=False))
    return root


def bag_path(root: Path, kind: str) -> Path:
    return root / ("bag.bag" if kind == "ros1" else f"bag_{kind}")


def source_cfg(root: Path, kind: str, **kw) -> RosbagConfig:
    return RosbagConfig(**dict(dict(bag=str(bag_path(root, kind)), camera=KINDS[kind],
                                    queries=str(root / "queries.yaml")), **kw))


def analyze_cfg(root: Path, kind: str, ckpt: Path, out: Path, **kw) -> AnalyzeConfig:
    return AnalyzeConfig(source="rosbag", out=str(out), rosbag=source_cfg(root, kind).to_dict(), progress=False,
                         engine={"model": str(ckpt), "device": "cpu", "dtype": "float32"}, **kw)


def read_rows(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without(rows, *keys):
    return {r["id"]: {k: v for k, v in r.items() if k not in keys} for r in rows}


def units_by_query(source: RosbagSource):
    return {u.query.id: u for u in source.units()}


# ---------------------------------------------------------------------------------------------- reading bags


@pytest.mark.parametrize("kind", list(KINDS))
def test_frames_are_indexed_by_header_stamp(data, kind):
    source = RosbagSource(source_cfg(data, kind))
    index = source.frames[KINDS[kind]]
    assert index.stamps == [stamp(i) for i in range(N)] and index.duplicates == 1
    assert sorted(index.received) != index.received  # receive order differs from stamp order in these bags
    assert index.msgtype.endswith("CompressedImage" if kind == "mcap" else "/Image")
    assert source.info_topics[KINDS[kind]] == "/cam/camera_info"
    assert source.infos["/cam/camera_info"].stamps == [stamp(f) for f, _ in INFOS]


def test_rosbag2_without_stored_type_definitions(data, tmp_path):
    """Bags recorded before ROS 2 Iron keep no message definitions: the common types are known anyway."""
    import sqlite3

    folder = tmp_path / "humble"
    shutil.copytree(bag_path(data, "sqlite3"), folder)
    db = sqlite3.connect(next(folder.glob("*.db3")))
    db.execute("DELETE FROM message_definitions")
    db.commit()
    db.close()
    source = RosbagSource(RosbagConfig(bag=str(folder), camera="/cam/image_raw", queries=str(data / "queries.yaml")))
    got = source.load(units_by_query(source)["ends-at-20"])
    assert got.row_fields["stamps_ns"] == [stamp(i) for i in EXPECTED["ends-at-20"]]


@pytest.mark.parametrize("kind", ["sqlite3", "ros1"])
def test_loaded_frames_are_the_stamped_messages_undistorted(data, kind):
    """Raw rgb8 (rosbag2) and bgr8 with padded rows (ROS 1): the clip holds exactly frames 10..14 (frame 12 is
    the first message with its stamp, not the later duplicate), undistorted with the CameraInfo nearest frame 10."""
    unit = units_by_query(RosbagSource(source_cfg(data, kind)))["from-reference"]
    got = RosbagSource(source_cfg(data, kind)).load(unit)
    camera = CameraModel.from_camera_info(K, INFOS[0][1], "plumb_bob", W, H, p=P)
    assert got.row_fields["stamps_ns"] == [stamp(i) for i in EXPECTED["from-reference"]]
    assert got.row_fields["undistorted"] and got.row_fields["camera_info_stamp_ns"] == stamp(0)
    for frame, i in zip(got.clip.frames, EXPECTED["from-reference"]):
        assert np.array_equal(frame.image, camera.undistort_image(frame_rgb(i)))
        assert frame.timestamp_s == stamp(i) / NS
    corners = camera.undistort_points(np.array([[2.0, 2.0], [20.0, 20.0]]))  # regions move with the frames,
    assert np.allclose(got.regions[0].box, np.clip(corners, 0, [W, H]).ravel(), atol=0.5)  # clipped to the image
    assert corners[0].min() < 0 and got.regions[0].box != (2.0, 2.0, 20.0, 20.0)
    plain = RosbagSource(source_cfg(data, kind, undistort=False)).load(unit)
    assert not plain.row_fields["undistorted"] and plain.regions[0].box == (2.0, 2.0, 20.0, 20.0)
    for frame, i in zip(plain.clip.frames, EXPECTED["from-reference"]):
        assert np.array_equal(frame.image, frame_rgb(i))


def test_a_query_can_name_another_camera(data, tmp_path):
    queries = tmp_path / "queries.yaml"
    query = {"id": "cam2", "question": "Where is <obj_1>?", "camera": "/cam2/image_raw",
             "regions": [{"id": 1, "box": [2, 2, 20, 20]}], "window": {"num_frames": 3, "duration_s": 0.2}}
    queries.write_text(yaml.safe_dump({"queries": [query, QUERIES[0]]}))
    source = RosbagSource(source_cfg(data, "sqlite3", queries=str(queries)))
    assert source.info_topics == {"/cam/image_raw": "/cam/camera_info", "/cam2/image_raw": ""}  # no sibling: raw
    unit = units_by_query(source)["cam2"]
    got = source.load(unit)
    assert unit.camera == "/cam2/image_raw" and unit.id == "bag_sqlite3/cam2"
    assert got.row_fields["stamps_ns"] == [stamp(i) + PERIOD // 2 for i in (2, 3, 4)]
    assert not got.row_fields["undistorted"] and all(f.image[0, 0, 2] == 200 for f in got.clip.frames)


def test_compressed_frames_decode_to_the_stamped_images(data):
    source = RosbagSource(source_cfg(data, "mcap", camera_info=""))
    got = source.load(units_by_query(source)["from-reference"])
    assert source.info_topics[KINDS["mcap"]] == "" and not got.row_fields["undistorted"]
    blue = [float(f.image[..., 2].mean()) for f in got.clip.frames]
    assert np.allclose(blue, [10 + 8 * i for i in EXPECTED["from-reference"]], atol=3)


def test_header_stamp_is_read_in_place():
    ts = get_typestore(Stores.ROS2_HUMBLE)
    msg, msgtype = _image(ts, "sqlite3", stamp(3), frame_rgb(3))
    assert header_stamp_ns(ts.serialize_cdr(msg, msgtype, little_endian=False), ros2=True) == stamp(3)
    ts1 = get_typestore(Stores.ROS1_NOETIC)
    msg, msgtype = _image(ts1, "ros1", stamp(4), frame_rgb(4))
    assert header_stamp_ns(ts1.serialize_ros1(msg, msgtype), ros2=False) == stamp(4)


# ---------------------------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def engine(tiny_ckpt_dir):
    from rgpt4d_sdk import Engine

    return Engine.from_pretrained(str(tiny_ckpt_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def cli_runs(data, tiny_ckpt_dir, tmp_path_factory):
    """`rgpt4d-sdk analyze rosbag` once per bag kind."""
    from typer.testing import CliRunner

    from rgpt4d_sdk.cli import app

    outs = {}
    for kind in KINDS:
        out = tmp_path_factory.mktemp(f"run-{kind}") / "out"
        result = CliRunner().invoke(app, [
            "analyze", "rosbag", str(bag_path(data, kind)), "--camera", KINDS[kind], "--queries",
            str(data / "queries.yaml"), "--model", str(tiny_ckpt_dir), "--out", str(out), "--device", "cpu",
            "--dtype", "float32", "--no-progress"])
        assert result.exit_code == 0, result.output
        outs[kind] = out
    return outs


@pytest.mark.parametrize("kind", list(KINDS))
def test_cli_writes_every_output_with_header_stamps(cli_runs, kind):
    import pyarrow.parquet as pq

    out = cli_runs[kind]
    rows = {r["query_id"]: r for r in read_rows(out / "results.jsonl") if r["status"] == "ok"}
    errors = {r["unit_id"].split("/")[-1]: r for r in read_rows(out / "results.jsonl") if r["status"] == "error"}
    assert set(rows) == set(EXPECTED) and {k: r["error_code"] for k, r in errors.items()} == ERRORS
    for qid, frames in EXPECTED.items():
        r = rows[qid]
        assert r["stamps_ns"] == [stamp(i) for i in frames]  # exact header stamps, not receive times
        assert r["timestamps_s"] == [round((stamp(i) - stamp(frames[0])) / NS, 6) for i in frames]
        assert r["t0_us"] == stamp(frames[0]) // 1000 and r["answer_text"] is not None
        assert r["unit_id"] == f"{bag_path(Path('.'), kind).name}/{qid}"
    assert rows["last-second"]["camera_info_stamp_ns"] == stamp(25) and rows["last-second"]["truth"] == "B"
    assert rows["ends-at-20"]["format"] == "numeric" and rows["ends-at-20"]["truth"] == pytest.approx(12.5)
    assert rows["last-second"]["score"] in (0.0, 1.0) and rows["from-reference"]["score"] is None
    assert ("GoalError [REGION_OUTSIDE_IMAGE]: region 1: box (500.0, 500.0, 600.0, 600.0) leaves the 64x48"
            in errors["outside"]["error"])
    assert "<obj_2>" in errors["missing-region"]["error"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"] == {"rows": 6, "ok": 3, "error": 3, "skipped": 0, "scored": 2}
    assert set(metrics["by_task"]) >= {"speed", "distance", "query"}
    assert pq.read_table(out / "results.parquet").num_rows == 6
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert "nuscenes" not in resolved and "questions" not in resolved  # the sections a rosbag run does not use
    cfg = AnalyzeConfig.from_dict(resolved)
    assert cfg.source == "rosbag" and cfg.fingerprint() == json.loads((out / "run.json").read_text())["fingerprint"]
    media = referenced_media((out / "report.html").read_text())
    assert len(media) == 6 and all((out / m).is_file() for m in media)  # SoM image + strip of each served query


def test_rerun_does_no_work_and_a_torn_tail_is_redone(cli_runs, data, tiny_ckpt_dir, engine, tmp_path):
    ref = cli_runs["sqlite3"]
    before = without(read_rows(ref / "results.jsonl"), "timings")
    again = run_analysis(analyze_cfg(data, "sqlite3", tiny_ckpt_dir, ref), engine=object())  # engine never used
    assert again.units_skipped_done == 6 and again.units_run == 0
    assert without(read_rows(ref / "results.jsonl"), "timings") == before
    out = tmp_path / "torn"
    out.mkdir()
    lines = (ref / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:4]) + lines[4][:30])
    shutil.copy(ref / "run.json", out / "run.json")
    stats = run_analysis(analyze_cfg(data, "sqlite3", tiny_ckpt_dir, out), engine=engine)
    assert stats.units_run == 2 and without(read_rows(out / "results.jsonl"), "timings") == before


def test_shards_merge_to_the_full_result(cli_runs, data, tiny_ckpt_dir, engine, tmp_path):
    out = tmp_path / "sharded"
    for i in range(2):
        run_analysis(analyze_cfg(data, "mcap", tiny_ckpt_dir, out, shard=f"{i}/2"), engine=engine)
    merge_shards(out)
    merged = without(read_rows(out / "results.jsonl"), "timings", "media")
    assert merged == without(read_rows(cli_runs["mcap"] / "results.jsonl"), "timings", "media")
    assert all((out / m).is_file() for m in referenced_media((out / "report.html").read_text()))


def test_edited_queries_file_refuses_resume(cli_runs, data, tiny_ckpt_dir):
    cfg = analyze_cfg(data, "ros1", tiny_ckpt_dir, cli_runs["ros1"])
    assert cfg.fingerprint() == json.loads((cli_runs["ros1"] / "run.json").read_text())["fingerprint"]
    original = (data / "queries.yaml").read_text()
    try:
        (data / "queries.yaml").write_text(original.replace("How fast", "How quickly"))
        with pytest.raises(ConfigError, match="different configuration"):
            run_analysis(cfg, engine=object())
    finally:
        (data / "queries.yaml").write_text(original)


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_or_mistyped_topics_are_rejected_with_the_topic_list(data, tmp_path):
    with pytest.raises(DatasetError, match=r"'/front/image_raw' is not in bag .*/cam/camera_info \(sensor_msgs"):
        RosbagSource(source_cfg(data, "sqlite3", camera="/front/image_raw"))
    with pytest.raises(DatasetError, match="did you mean /cam/image_raw"):
        RosbagSource(source_cfg(data, "ros1", camera="cam/image_raw"))
    with pytest.raises(DatasetError, match="carries sensor_msgs/msg/CameraInfo"):
        RosbagSource(source_cfg(data, "mcap", camera="/cam/camera_info"))
    with pytest.raises(DatasetError, match="camera_info topic '/cam/info'"):
        RosbagSource(source_cfg(data, "mcap", camera_info="/cam/info"))
    queries = tmp_path / "queries.yaml"
    queries.write_text(yaml.safe_dump({"queries": [dict(QUERIES[0], camera="/cam3/image_raw")]}))
    with pytest.raises(DatasetError, match="'/cam3/image_raw' is not in bag"):  # a query's own camera too
        RosbagSource(source_cfg(data, "sqlite3", queries=str(queries)))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="does not exist"):
        run_analysis(AnalyzeConfig(source="rosbag", out=str(out), rosbag=dict(
            source_cfg(data, "mcap").to_dict(), bag=str(tmp_path / "nope"))))
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "not-a-bag"])
def test_corrupt_bags_are_dataset_errors(data, tmp_path, damage):
    bag = tmp_path / "bag.bag"
    raw = bag_path(data, "ros1").read_bytes()
    bag.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"garbage" * 100)
    with pytest.raises(DatasetError, match="cannot be read"):
        RosbagSource(RosbagConfig(bag=str(bag), camera="/cam/image_raw", queries=str(data / "queries.yaml")))
    folder = tmp_path / "bag2"
    shutil.copytree(bag_path(data, "sqlite3"), folder)
    db = next(folder.glob("*.db3"))
    db.write_bytes(db.read_bytes()[:2048])
    with pytest.raises(DatasetError, match="cannot be read"):
        RosbagSource(RosbagConfig(bag=str(db), camera="/cam/image_raw", queries=str(data / "queries.yaml")))


@pytest.mark.parametrize("edit, message", [
    (lambda q: q[0].update(qestion="x"), r"unknown key\(s\) \['qestion'\]"),
    (lambda q: q[0]["window"].update(frames=3), r"window: unknown key\(s\) \['frames'\]"),
    (lambda q: q[0]["regions"][0].update(bbox=[1, 2, 3, 4]), r"unknown key\(s\) \['bbox'\]"),
    (lambda q: q[1].update(id="last-second"), "ids must be unique"),
    (lambda q: q[0].update(truth="E"), "not an option letter"),
    (lambda q: q[1].update(unit="parsecs"), "unit 'parsecs' is unknown"),
    (lambda q: q[2]["window"].update(end="yesterday"), "is not a stamp"),
    (lambda q: q[0]["regions"][0].update(mask="nope.png"), "exactly one of"),
    (lambda q: q[2]["regions"][0].update(box=None, mask="nope.png"), "mask file .*nope.png does not exist"),
])
def test_bad_queries_files_are_config_errors(data, tmp_path, edit, message):
    queries = json.loads(json.dumps(QUERIES))
    edit(queries)
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"queries": queries}))
    with pytest.raises(ConfigError, match=message):
        load_queries(path)
    with pytest.raises(ConfigError, match=message):  # before the bag is opened
        RosbagSource(RosbagConfig(bag=str(tmp_path / "missing"), camera="/c", queries=str(path)))


def test_mask_regions_and_config_checks(data, tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[10:20, 30:50] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    query = dict(QUERIES[2], regions=[{"id": 1, "mask": "m.png"}])
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({"queries": [query]}))
    source = RosbagSource(RosbagConfig(bag=str(bag_path(data, "sqlite3")), camera="/cam/image_raw",
                                       queries=str(tmp_path / "q.yaml"), undistort=False))
    got = source.load(source.units()[0])
    assert np.array_equal(got.regions[0].mask, mask > 0)
    digest = RosbagConfig(bag="b", camera="/c", queries=str(tmp_path / "q.yaml")).content_digest()
    Image.fromarray(mask[::-1].copy()).save(tmp_path / "m.png")
    assert RosbagConfig(bag="b", camera="/c", queries=str(tmp_path / "q.yaml")).content_digest() != digest
    with pytest.raises(ConfigError, match=r"rosbag.camera is empty.*--camera"):
        RosbagConfig(bag="b", queries="q")
    with pytest.raises(ConfigError, match="unknown rosbag option"):
        AnalyzeConfig(source="rosbag", rosbag={"bag": "b", "camera": "/c", "queries": "q", "topic": "/x"})
    with pytest.raises(ConfigError, match="needs a rosbag section"):
        AnalyzeConfig(source="rosbag")


def test_stamp_forms_and_sibling_topics():
    assert parse_stamp("1700000012.25", "end") == 1_700_000_012_250_000_000
    assert parse_stamp("1700000012.000000007", "end") == 1_700_000_012_000_000_007
    assert parse_stamp(1_700_000_012_000_000_007, "end") == 1_700_000_012_000_000_007
    assert abs(parse_stamp(1700000012.25, "end") - 1_700_000_012_250_000_000) < 1000
    assert parse_stamp(0, "end") == 0
    with pytest.raises(ConfigError, match="negative"):
        parse_stamp(-1, "end")
    assert camera_info_topic("/cam/image_raw/compressed") == "/cam/camera_info"
    assert camera_info_topic("/cam/image_raw") == "/cam/camera_info"
    assert camera_info_topic("/image") == "/camera_info"
