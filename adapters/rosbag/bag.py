"""Reading camera topics from ROS bags with `rosbags`: rosbag2 folders (sqlite3 ``.db3`` or ``.mcap`` storage, as
``metadata.yaml`` says) and ROS 1 ``.bag`` files, through `rosbags.highlevel.AnyReader` and the message
definitions stored in the bag. rosbag2 bags recorded before ROS 2 Iron store none; they are read with rosbags'
latest ROS 2 types (Image, CompressedImage and CameraInfo have not changed since Foxy).

Frames are ordered by ``header.stamp`` (integer ns), never by the time the recorder received them. `BagFile.index`
reads each image topic once and keeps, per frame, only its stamp and its receive time; `BagFile.read_frames`
later reads the few frames a query picks (a receive-time range query, so storage indexes skip the rest) and keeps
their payloads undecoded, as `rgpt4d_sdk.live.buffer.StoredFrame`. CameraInfo messages are indexed by stamp with
their parameters, one copy per distinct calibration.
"""
from __future__ import annotations

import sqlite3
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from rgpt4d_sdk.errors import DatasetError
from rgpt4d_sdk.live.buffer import StoredFrame
from rgpt4d_sdk.live.images import camera_model_from_info, stamp_to_ns

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED)


def _bag_errors() -> tuple:
    """What `rosbags` raises on unreadable, truncated or corrupt bags (it also passes through I/O and sqlite
    errors)."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error

    # UnicodeDecodeError: a rosbag2 metadata.yaml that is not text (rosbags reads it before its own checks)
    return (AnyReaderError, Reader1Error, Reader2Error, OSError, sqlite3.Error, struct.error, EOFError,
            UnicodeDecodeError)


def resolve_bag_path(path: "str | Path") -> Path:
    """The path `AnyReader` takes: a rosbag2 folder or a ``.bag`` file. A ``.db3``/``.mcap`` file inside a rosbag2
    folder stands for its folder. Anything else raises `DatasetError` saying what to pass."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"bag {p} does not exist; pass a rosbag2 folder (with metadata.yaml) or a ROS 1 .bag file.")
    if p.is_file() and p.suffix in (".db3", ".mcap") and (p.parent / "metadata.yaml").is_file():
        return p.parent
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise DatasetError(f"{p} is a folder without metadata.yaml, so not a rosbag2 bag; pass the folder that "
                           "`ros2 bag record` wrote (metadata.yaml + .db3/.mcap files), or a ROS 1 .bag file.")
    if p.is_file() and p.suffix != ".bag":
        raise DatasetError(f"{p} is neither a ROS 1 .bag file nor a rosbag2 folder; a bare {p.suffix or 'file'} "
                           "needs its rosbag2 folder with metadata.yaml (`ros2 bag reindex` can rebuild it).")
    return p


def header_stamp_ns(raw: "bytes | memoryview", ros2: bool) -> "int | None":
    """``header.stamp`` (ns) of a serialized message whose first field is a std_msgs/Header (Image,
    CompressedImage, CameraInfo), read in place: CDR has a 4-byte encapsulation header then int32 sec, uint32
    nanosec; ROS 1 has uint32 seq then uint32 sec, uint32 nsec, little-endian. None for other CDR encodings."""
    if not ros2:
        sec, nsec = struct.unpack_from("<II", raw, 4)
        return sec * 1_000_000_000 + nsec
    if raw[0] != 0 or raw[1] not in (0, 1):  # 0x0000 CDR big-endian, 0x0001 CDR little-endian
        return None
    sec, nsec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class FrameIndex:
    """The frames of one image topic in stamp order: ``stamps`` (header stamps, ns, sorted, unique) and
    ``received`` (the bag's receive time of each, ns). ``duplicates``: messages dropped for a repeated stamp
    (the first one recorded is kept)."""

    topic: str
    msgtype: str
    stamps: List[int] = field(default_factory=list)
    received: List[int] = field(default_factory=list)
    duplicates: int = 0


@dataclass
class InfoIndex:
    """CameraInfo messages of one topic in stamp order: ``stamps`` (ns, sorted) and, for each, the index into
    ``params`` of its calibration (k, d, distortion_model, width, height, p)."""

    topic: str
    stamps: List[int] = field(default_factory=list)
    which: List[int] = field(default_factory=list)
    params: List[tuple] = field(default_factory=list)

    def camera(self, i: int):
        """The `CameraModel` of the i-th message (raises `CalibrationError` for an invalid calibration)."""
        k, d, model, width, height, p = self.params[self.which[i]]
        msg = SimpleNamespace(k=k, d=d, distortion_model=model, width=width, height=height, p=p)
        return camera_model_from_info(msg, camera_id=self.topic)


FrameIndexes = Dict[str, FrameIndex]  # by image topic
InfoIndexes = Dict[str, InfoIndex]  # by CameraInfo topic


def _info_params(msg: Any) -> tuple:
    """CameraInfo fields; ROS 1 messages spell the matrices in capitals (K, D, P)."""
    get = (lambda name: getattr(msg, name)) if hasattr(msg, "k") else (lambda name: getattr(msg, name.upper()))
    return (tuple(float(v) for v in get("k")), tuple(float(v) for v in get("d")), str(msg.distortion_model),
            int(msg.width), int(msg.height), tuple(float(v) for v in get("p")))


class BagFile:
    """One bag: its topics, and the readers of frames and camera calibrations. A reader is opened per call, so a
    `BagFile` holds no open file between calls."""

    def __init__(self, path: "str | Path") -> None:
        self.path = resolve_bag_path(path)
        with self._open() as reader:
            self.topics: Dict[str, str] = {name: str(info.msgtype) for name, info in reader.topics.items()}

    @contextmanager
    def _open(self) -> Iterator[Any]:
        """An open `AnyReader`; its errors (on open or while reading) become `DatasetError`."""
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        errors = _bag_errors()
        try:
            reader = AnyReader([self.path], default_typestore=get_typestore(Stores.LATEST))
            reader.open()
        except errors as err:
            if isinstance(err, UnicodeDecodeError):
                raise DatasetError(f"bag {self.path} cannot be read: its metadata.yaml is not UTF-8 text ({err.reason} "
                                   f"at byte {err.start}); restore it, or rebuild it with `ros2 bag reindex`.") from None
            raise DatasetError(f"bag {self.path} cannot be read ({type(err).__name__}: {err}); it is corrupt, "
                               "truncated or not a bag (rosbag2 folders need metadata.yaml).") from None
        try:
            yield reader
        except errors as err:
            raise DatasetError(f"bag {self.path} is damaged ({type(err).__name__}: {err}); re-copy or reindex it "
                               "(`ros2 bag reindex`, `rosbag reindex`).") from None
        finally:
            reader.close()

    def topic_list(self) -> str:
        """The bag's topics as "topic (message type)", comma-separated, or "none": for error messages."""
        return ", ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "none"

    def check_topic(self, topic: str, types: Sequence[str], what: str) -> str:
        """The message type of ``topic``; a missing topic or one of another type raises `DatasetError`."""
        if topic not in self.topics:
            hint = f" (did you mean /{topic}?)" if f"/{topic}" in self.topics else ""
            raise DatasetError(f"{what} topic {topic!r} is not in bag {self.path}{hint}; topics in the bag: "
                               f"{self.topic_list()}.")
        if self.topics[topic] not in types:
            raise DatasetError(f"{what} topic {topic!r} carries {self.topics[topic]}, not {' or '.join(types)}; "
                               f"pick another topic. Topics in the bag: {self.topic_list()}.")
        return self.topics[topic]

    def index(self, image_topics: Sequence[str], info_topics: Sequence[str]) -> Tuple[FrameIndexes, InfoIndexes]:
        """One pass over the bag: the frame index of each image topic and the CameraInfo index of each info
        topic (topics must have been checked with `check_topic`)."""
        seen: Dict[str, List[Tuple[int, int, int]]] = {t: [] for t in image_topics}  # (stamp, order, received)
        info_rows: Dict[str, List[Tuple[int, tuple]]] = {t: [] for t in info_topics}  # (stamp, parameters)
        wanted = set(image_topics) | set(info_topics)
        with self._open() as reader:
            conns = [c for c in reader.connections if c.topic in wanted]
            for order, (conn, received, raw) in enumerate(reader.messages(connections=conns)):
                if conn.topic in info_rows:
                    msg = reader.deserialize(raw, conn.msgtype)
                    info_rows[conn.topic].append((stamp_to_ns(msg.header.stamp), _info_params(msg)))
                if conn.topic in seen:
                    seen[conn.topic].append((self._stamp(reader, conn, raw), order, int(received)))
        frames = {t: _frame_index(t, self.topics[t], rows) for t, rows in seen.items()}
        return frames, {t: _info_index(t, rows) for t, rows in info_rows.items()}

    @staticmethod
    def _stamp(reader: Any, conn: Any, raw: Any) -> int:
        stamp = header_stamp_ns(raw, reader.is2)
        return stamp if stamp is not None else stamp_to_ns(reader.deserialize(raw, conn.msgtype).header.stamp)

    def read_frames(self, index: FrameIndex, picks: Sequence[int]) -> Dict[int, StoredFrame]:
        """The frames at positions ``picks`` of ``index``, by position, payloads undecoded. Raises `DatasetError`
        when one is no longer in the bag (it changed since it was indexed)."""
        want = {(index.received[i], index.stamps[i]): i for i in picks}
        times = {received for received, _ in want}
        out: Dict[int, StoredFrame] = {}
        with self._open() as reader:
            conns = [c for c in reader.connections if c.topic == index.topic]
            for conn, received, raw in reader.messages(connections=conns, start=min(times), stop=max(times) + 1):
                if int(received) not in times:  # most messages in the range: skipped without parsing
                    continue
                key = (int(received), self._stamp(reader, conn, raw))
                if key in want and want[key] not in out:
                    out[want[key]] = _stored(reader.deserialize(raw, conn.msgtype), index.msgtype, key)
        missing = [index.stamps[i] for i in picks if i not in out]
        if missing:
            raise DatasetError(f"bag {self.path}: frames with stamps {missing[:3]} ns of {index.topic} are gone; the "
                               "bag changed since it was indexed. Run again.")
        return out


def _frame_index(topic: str, msgtype: str, rows: List[Tuple[int, int, int]]) -> FrameIndex:
    index = FrameIndex(topic, msgtype)
    for stamp, _, received in sorted(rows):
        if index.stamps and index.stamps[-1] == stamp:
            index.duplicates += 1
            continue
        index.stamps.append(stamp)
        index.received.append(received)
    return index


def _info_index(topic: str, rows: List[Tuple[int, tuple]]) -> InfoIndex:
    info, ids = InfoIndex(topic), {}
    for stamp, params in sorted(rows, key=lambda r: r[0]):
        if params not in ids:
            ids[params] = len(info.params)
            info.params.append(params)
        info.stamps.append(stamp)
        info.which.append(ids[params])
    return info


def _stored(msg: Any, msgtype: str, key: Tuple[int, int]) -> StoredFrame:
    received, stamp = key
    if msgtype == COMPRESSED:
        return StoredFrame(stamp, "compressed", bytes(msg.data), encoding=str(msg.format), received_ns=received)
    return StoredFrame(stamp, "raw", bytes(msg.data), encoding=str(msg.encoding), width=int(msg.width),
                       height=int(msg.height), step=int(msg.step), is_bigendian=int(msg.is_bigendian),
                       received_ns=received)
