"""Real-time scheduling for the robot's control thread, taken while a client is open and given back.

Why: with the cores oversubscribed (a robot computer's drivers, planners, loggers; in the
measurements, N busy processes on 2 cores) a normal thread that sleeps until its next tick
waits behind them to be scheduled again, and a 30 Hz loop misses ticks although
``select_action`` itself takes 0.2 ms. Nothing inside the process fixes that: niceness or
fewer ONNX Runtime threads only shuffle the process's own share. SCHED_FIFO makes the
control thread run the moment it wakes (BENCHMARKS.md, "under contention").

The policy applies to the one thread that first calls ``select_action``, and one step below
it to the worker thread that runs the core (a control thread on time with a starved worker
sends fallbacks: measured, chunks took 5.2 s instead of 0.33 s and 810 of 900 ticks were
fallbacks); both are restored when the client closes. A low real-time priority (:data:`CONTROL_FIFO_PRIORITY`) stays below the
kernel's interrupt threads (50); the kernel's real-time throttling (95% of each second by
default) still leaves the rest of the system 5% if the loop ever spins.
"""

from __future__ import annotations

import logging
import os
import threading

from policy_export.errors import first_line

log = logging.getLogger(__name__)

#: SCHED_FIFO priority of the control thread (1-99; the kernel's IRQ threads run at 50).
CONTROL_FIFO_PRIORITY = 10


class FifoThread:
    """The calling thread made SCHED_FIFO; :meth:`release` restores its previous policy."""

    def __init__(self, tid: int, policy: int, param: object) -> None:
        self.tid, self.policy, self.param = tid, policy, param

    @classmethod
    def take(cls, priority: int = CONTROL_FIFO_PRIORITY, tid: int = 0) -> FifoThread | None:
        """Thread ``tid`` (0: the calling one) made SCHED_FIFO. None where it cannot be had (not
        Linux, no permission: one log line) or is not ours to change (the thread already runs
        under a real-time policy: its owner's choice)."""
        if not hasattr(os, "sched_setscheduler"):
            log.info("realtime: no SCHED_FIFO on this platform; the control thread keeps its scheduling")
            return None
        try:
            policy, param = os.sched_getscheduler(tid), os.sched_getparam(tid)
            if policy in (os.SCHED_FIFO, os.SCHED_RR):
                return None
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as exc:  # EPERM without root / CAP_SYS_NICE / an rtprio limit
            log.info(
                "realtime: the control thread stays at normal priority (SCHED_FIFO refused: %s); under CPU "
                "contention it may miss ticks: grant an rtprio limit (e.g. limits.conf rtprio %d) or CAP_SYS_NICE",
                first_line(exc),
                priority,
            )
            return None
        return cls(tid or threading.get_native_id(), policy, param)

    def release(self) -> None:
        """Back to the thread's previous policy (from any thread; a thread that has ended is ignored)."""
        try:
            os.sched_setscheduler(self.tid, self.policy, self.param)  # type: ignore[arg-type]
        except OSError:
            pass
