"""Stopping the node on SIGINT / SIGTERM without losing a goal.

rclpy's own signal handler shuts the ROS context down at once: an action callback that then concludes its goal
raises (``goal_handle.abort()`` -> RCLError, a traceback) and the client never receives a result. Instead `main`
starts rclpy without its signal handlers, turns SIGTERM into KeyboardInterrupt like SIGINT (and turns SIGINT back
on when it was inherited ignored), and on either calls `drain`: new goals are refused with SHUTDOWN, goals waiting
in the queue end with SHUTDOWN, the running one is stopped at its next stage (SHUTDOWN) or abandoned after a grace
period, and the executor keeps spinning until every accepted goal's result has been sent. Only then is the context
shut down.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, Optional

REASON = "the node is shutting down"


def raise_on_stop_signals() -> Optional[Callable[..., Any]]:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (as SIGINT does), and SIGINT too when the process
    was started with it ignored: a shell's ``&`` (job control off) and some supervisors start children with SIGINT
    ignored, and Python then leaves it ignored, so Ctrl-C or ``kill -INT`` would not stop the node. Returns the
    previous SIGTERM handler, or None when called off the main thread (embedders keep their own handling)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return signal.signal(signal.SIGTERM, handler)


def drain(node: Any, executor: Any, grace_s: float = 10.0, flush_s: float = 0.5) -> None:
    """End every accepted goal of ``node`` with a result while ``executor`` keeps spinning (see the module doc).

    grace_s: how long the running answer may take to stop; flush_s: extra spinning after the last goal concluded,
    so the result responses reach the clients. A second interrupt during the drain stops waiting."""
    stopper = threading.Thread(target=node.begin_shutdown, args=(REASON, grace_s), name="rgpt4d-shutdown",
                               daemon=True)
    stopper.start()
    deadline = time.monotonic() + grace_s + 5.0
    flush_until = None
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
            if stopper.is_alive() or node.goals_in_flight():
                flush_until = None
                continue
            flush_until = flush_until or time.monotonic() + flush_s
            if time.monotonic() >= flush_until:
                break
    except KeyboardInterrupt:
        node.get_logger().warning("second interrupt: exiting without waiting for the goals' results")
