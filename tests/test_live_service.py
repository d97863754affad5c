"""rgpt4d_sdk.live without ROS: the one-worker query service on the tiny checkpoint."""
from __future__ import annotations

import math
import threading

import pytest

from rgpt4d_sdk.errors import GenerationError, GoalError
from rgpt4d_sdk.live.buffer import BufferSet
from rgpt4d_sdk.live.goals import Goal, RegionSpec, prepare_query
from rgpt4d_sdk.live.images import Undistorter
from rgpt4d_sdk.live.service import Job, LiveResult, QueryService
from rgpt4d_sdk.live.window import WindowSpec

from live_helpers import NS, T0, distorted_camera, frame_image, raw_frame, stream


# ------------------------------------------------------------------------------------------------ service
@pytest.fixture(scope="module")
def engine(tiny_ckpt_dir):
    from rgpt4d_sdk.engine import Engine

    return Engine.from_pretrained(str(tiny_ckpt_dir), device="cpu", dtype="float32")


class GatedEngine:
    """The real engine behind a gate: ``answer`` records the query id, waits for the gate, then answers for real
    (or raises the exception registered for that id)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list = []
        self.fail: dict = {}

    @property
    def max_frames(self) -> int:
        return self.engine.max_frames

    def answer(self, query, max_new_tokens=None):
        self.calls.append(query.id)
        assert self.gate.wait(20), "test gate never opened"
        if query.id in self.fail:
            raise self.fail[query.id]
        return self.engine.answer(query, max_new_tokens=max_new_tokens)


class Recorder:
    """done / on_stage / is_cancelled callbacks of one job."""

    def __init__(self, order: list | None = None, cancel_at: str = "") -> None:
        self.results: list = []
        self.stages: list = []
        self.finished = threading.Event()
        self.answering = threading.Event()
        self.cancelled = cancel_at == "queued"
        self.cancel_at = cancel_at
        self.order = order

    def done(self, res: LiveResult) -> None:
        self.results.append(res)
        if self.order is not None:
            self.order.append(self)
        self.finished.set()

    def stage(self, name: str) -> None:
        self.stages.append(name)
        if name == "answering":
            self.answering.set()
        if name == self.cancel_at:
            self.cancelled = True

    def job(self, goal: Goal) -> Job:
        return Job(goal, self.done, self.stage, lambda: self.cancelled)

    def wait(self) -> LiveResult:
        assert self.finished.wait(20), "the job never finished"
        assert len(self.results) == 1
        return self.results[0]


def live_goal(gid: str = "", num_frames: int = 4, **kw) -> Goal:
    return Goal("front", "Is <obj_1> moving left or right?", options=["left", "right"],
                regions=[RegionSpec(1, box=(8, 8, 40, 30))], window=WindowSpec(num_frames=num_frames, duration_s=0.3),
                id=gid, **kw)


@pytest.fixture()
def buffers():
    bs = BufferSet(max_frames=30, max_age_s=2.0)
    ring = bs.add("front")
    for k, s in enumerate(stream(20)):
        ring.push(raw_frame(s, frame_image(k)))
    return bs


@pytest.fixture()
def service_factory():
    made = []

    def make(engine, buffers, **kw):
        svc = QueryService(engine, buffers, **kw)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        if isinstance(svc.engine, GatedEngine):
            svc.engine.gate.set()
        svc.stop()


def test_service_end_to_end_ok(engine, buffers, service_factory):
    svc = service_factory(engine, buffers)
    svc.start()
    assert svc.running
    rec = Recorder()
    goal = live_goal("g1")
    assert svc.submit(rec.job(goal)) is None
    res = rec.wait()
    assert res.code == "OK" and res.ok and res.message == ""
    stamps, frames = buffers.get("front").snapshot()
    prep = prepare_query(goal, stamps, frames, source="front")
    ans = engine.answer(prep.query)
    assert res.text == ans.text and res.choice == (ans.choice or "") and res.unit == (ans.unit or "")
    assert (math.isnan(res.value) and ans.value is None) or res.value == ans.value
    assert res.engine_id == ans.engine_id == engine.engine_id
    # 0.3 s ending at frame 19 holds frames 10..19; 4 targets 3 periods apart
    assert res.stamps_ns == prep.stamps_ns == stream(20)[10::3]
    assert {"queue", "select", "decode", "assemble", "total"} <= set(res.latency)
    assert {f"engine_{k}" for k in ans.timings} <= set(res.latency)
    assert rec.stages == ["selecting", "answering", "done"]
    st = svc.status()
    assert st["counts"] == {"OK": 1} and st["pending"] == 0 and st["queue_depth"] == 2
    assert st["latency_last"] == res.latency["total"] == st["latency_p50"] == st["latency_mean"]


def test_service_with_undistortion(engine, buffers, service_factory):
    cam = distorted_camera()
    buffers.get("front").camera_info = cam
    svc = service_factory(engine, buffers, undistort=True)
    svc.start()
    rec = Recorder()
    goal = live_goal("u1")
    svc.submit(rec.job(goal))
    res = rec.wait()
    assert res.ok
    stamps, frames = buffers.get("front").snapshot()
    expected = engine.answer(prepare_query(goal, stamps, frames, Undistorter(cam), source="front").query)
    plain = engine.answer(prepare_query(goal, stamps, frames, source="front").query)
    assert res.text == expected.text
    assert plain.text != expected.text  # the tiny model does see the difference: undistortion was applied


def test_not_active_before_start_and_after_stop(engine, buffers, service_factory):
    svc = service_factory(engine, buffers)
    rec = Recorder()
    err = svc.submit(rec.job(live_goal()))
    assert isinstance(err, GoalError) and err.code == "NOT_ACTIVE"
    assert rec.results == [] and svc.pending() == 0
    assert svc.status()["counts"] == {"NOT_ACTIVE": 1}
    svc.start()
    svc.stop()
    assert not svc.running
    assert svc.submit(Recorder().job(live_goal())).code == "NOT_ACTIVE"
    with pytest.raises(ValueError):
        QueryService(engine, buffers, queue_depth=0)


def test_queue_full_and_fifo_order(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    order: list = []
    recs = [Recorder(order) for _ in range(3)]
    for i, r in enumerate(recs):
        assert svc.submit(r.job(live_goal(f"q{i}"))) is None
    assert recs[0].answering.wait(20)
    assert svc.pending() == 3
    extra = Recorder(order)
    err = svc.submit(extra.job(live_goal("q3")))
    assert err is not None and err.code == "QUEUE_FULL" and "queue_depth=3" in str(err)
    gated.gate.set()
    results = [r.wait() for r in recs]
    assert [r.code for r in results] == ["OK"] * 3
    assert order == recs and gated.calls == ["q0", "q1", "q2"]
    assert extra.results == []
    st = svc.status()
    assert st["counts"] == {"OK": 3, "QUEUE_FULL": 1} and st["pending"] == 0
    totals = [r.latency["total"] for r in results]
    assert st["latency_last"] == totals[-1]
    assert st["latency_p50"] == sorted(totals)[1] and st["latency_p95"] == sorted(totals)[2]
    assert st["latency_mean"] == pytest.approx(sum(totals) / 3)
    assert totals[2] > totals[0]  # q2 waited behind q0 and q1


def test_queue_depth_one_refuses_while_a_goal_runs(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=1)
    svc.start()
    a = Recorder()
    svc.submit(a.job(live_goal("a")))
    assert a.answering.wait(20)
    assert svc.submit(Recorder().job(live_goal("b"))).code == "QUEUE_FULL"
    gated.gate.set()
    assert a.wait().ok
    assert svc.submit(Recorder().job(live_goal("c"))) is None  # room again


def test_cancel_a_waiting_job(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    a, b, c = Recorder(), Recorder(), Recorder()
    job_b = b.job(live_goal("b"))
    svc.submit(a.job(live_goal("a")))
    svc.submit(job_b)
    svc.submit(c.job(live_goal("c")))
    assert a.answering.wait(20)
    assert svc.cancel(job_b) is True
    assert b.finished.is_set()  # at once, from the caller of cancel
    assert [r.code for r in b.results] == ["CANCELED"] and b.stages == ["done"]
    assert svc.cancel(job_b) is False
    assert svc.pending() == 2
    gated.gate.set()
    assert a.wait().ok and c.wait().ok
    assert len(b.results) == 1 and gated.calls == ["a", "c"]
    assert svc.cancel(job_b) is False
    assert svc.status()["counts"] == {"OK": 2, "CANCELED": 1}


@pytest.mark.parametrize("cancel_at, message, engine_called", [
    ("queued", "cancelled while queued", False),
    ("selecting", "cancelled before answering", False),
    ("answering", "cancelled while answering", True),
])
def test_cancel_a_running_job_at_the_next_stage(engine, buffers, service_factory, cancel_at, message,
                                                engine_called):
    gated = GatedEngine(engine)
    svc = service_factory(gated, buffers)
    svc.start()
    rec = Recorder(cancel_at=cancel_at)
    svc.submit(rec.job(live_goal("x")))
    res = rec.wait()
    assert res.code == "CANCELED" and res.message == message
    assert (gated.calls == ["x"]) is engine_called
    assert bool(res.stamps_ns) is (cancel_at != "queued")
    assert rec.stages[-1] == "done" and ("selecting" in rec.stages) is (cancel_at != "queued")
    # the worker goes on
    nxt = Recorder()
    svc.submit(nxt.job(live_goal("y")))
    assert nxt.wait().ok


def test_stop_refuses_waiting_jobs_and_lets_the_running_one_finish(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.gate.clear()
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    a, b, c = Recorder(), Recorder(), Recorder()
    for r, gid in ((a, "a"), (b, "b"), (c, "c")):
        svc.submit(r.job(live_goal(gid)))
    assert a.answering.wait(20)
    stopper = threading.Thread(target=svc.stop, kwargs={"reason": "shutting down for the test"})
    stopper.start()
    for r in (b, c):
        res = r.wait()
        assert res.code == "NOT_ACTIVE" and res.message == "shutting down for the test"
    assert not a.finished.is_set() and stopper.is_alive()  # stop waits for the running goal
    assert svc.submit(Recorder().job(live_goal("d"))).code == "NOT_ACTIVE"
    gated.gate.set()
    stopper.join(20)
    assert not stopper.is_alive()
    assert a.wait().ok and gated.calls == ["a"]
    assert not svc.running


def test_engine_errors_become_engine_error_and_the_worker_keeps_serving(engine, buffers, service_factory):
    gated = GatedEngine(engine)
    gated.fail = {"boom": RuntimeError("CUDA fell over"), "gen": GenerationError("context full")}
    svc = service_factory(gated, buffers, queue_depth=3)
    svc.start()
    recs = {gid: Recorder() for gid in ("boom", "gen", "fine")}
    for gid, r in recs.items():
        assert svc.submit(r.job(live_goal(gid))) is None
    boom, gen, fine = (recs[g].wait() for g in ("boom", "gen", "fine"))
    assert boom.code == "ENGINE_ERROR" and boom.message == "RuntimeError: CUDA fell over"
    assert gen.code == "ENGINE_ERROR" and gen.message == "GenerationError: context full"
    assert len(gen.stamps_ns) == 4
    assert fine.ok
    st = svc.status()
    assert st["counts"] == {"ENGINE_ERROR": 2, "OK": 1}
    assert st["latency_last"] == fine.latency["total"]  # only answered goals count for latency


def test_goal_errors_are_results(engine, buffers, service_factory):
    svc = service_factory(engine, buffers, queue_depth=4)
    svc.start()
    box = [RegionSpec(1, box=(1, 1, 5, 5))]
    cases = {
        "UNKNOWN_CAMERA": Goal("rear", "What is <obj_1>?", regions=box),
        "BAD_QUERY": Goal("front", " ", regions=box),
        "END_STAMP_IN_FUTURE": Goal("front", "What is <obj_1>?", regions=box,
                                    window=WindowSpec(num_frames=4, end_ns=T0 + 60 * NS)),
        "REGION_OUTSIDE_IMAGE": Goal("front", "What is <obj_1>?", regions=[RegionSpec(1, box=(100, 1, 120, 5))]),
    }
    for code, goal in cases.items():
        rec = Recorder()
        svc.submit(rec.job(goal))
        res = rec.wait()
        assert res.code == code and res.message and res.text == ""
        assert "queue" in res.latency
    assert svc.status()["counts"] == {code: 1 for code in cases}
    assert math.isnan(svc.status()["latency_p50"])


def test_num_frames_above_engine_max_frames_is_refused(engine, buffers, service_factory):
    svc = service_factory(engine, buffers)
    svc.start()
    limit = engine.max_frames
    rec = Recorder()
    svc.submit(rec.job(live_goal("big", num_frames=limit + 1)))
    res = rec.wait()
    assert res.code == "BAD_WINDOW"
    assert f"num_frames {limit + 1}" in res.message and f"at most {limit} frames" in res.message
    assert rec.stages == ["selecting", "done"]
