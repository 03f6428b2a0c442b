"""``RealtimeClient``: a robot control loop that never waits for the model, and fails safe.

``PolicyClient.select_action`` runs the core on the caller's thread whenever its queue runs
dry, so every chunk boundary blocks the robot loop for one whole inference (with temporal
ensembling: every step), and a dead server is an exception in the loop. This client keeps
the loop's timing apart from the model's:

- ``select_action(obs)`` only reads a local action buffer and hands the observation to one
  worker thread through a one-slot mailbox (newest wins; never a backlog). The worker runs
  the backend (any ``PolicyClient`` backend: ONNX Runtime, TorchScript, TensorRT, Triton),
  one request in flight.
- Every chunk is stamped with the control step of its observation. Arriving ``d`` steps
  later, its first ``d`` actions are in the past and are skipped, so the action run at step
  ``t`` is always the one predicted for step ``t``. ``merge="replace"``: the newest chunk
  replaces the rest of the buffer (a chunk is requested when the buffered playback falls
  below ``buffer_time_s``); ``merge="ensemble"``: ACT's temporal ensembling over every chunk
  covering step ``t`` (requested continuously), the shim's own arithmetic, so that with zero
  latency it is LeRobot's ``ACTTemporalEnsembler`` to the bit.
- A state machine says how healthy the link is (:class:`State`); without a usable action the
  robot gets a flagged fallback (:class:`Fallback`), after failures the worker reconnects
  with exponential backoff (Triton: the next replica, refusing any that serves another
  model), and when the link is beyond saving (``DEAD``) ``select_action`` raises one line.

The first action of an episode waits (at most ``startup_timeout_s``) for the first chunk:
before the model has spoken there is no safe action to command. Everything after that is
bounded by the buffer, never by the model. The clock and the worker are injectable
(:class:`ManualClock`, :class:`InlineWorker`), so tests drive the state machine in virtual
time with deterministic backends; nothing here sleeps to synchronise.

numpy and the standard library only, like the rest of :mod:`policy_export.runtime`.
A package so that each part has one home: ``settings`` (what the client is told and the
words it reports in), ``buffers`` (which action runs at step ``t``), ``link`` (the worker's
side: mailbox, events, backoff and reconnect), ``worker`` (where that runs: a thread or
virtual time) and ``client`` (the robot loop's side and the state machine).
"""

from policy_export.runtime.realtime.buffers import Tick
from policy_export.runtime.realtime.client import RealtimeClient, StateCallback
from policy_export.runtime.realtime.link import Worker
from policy_export.runtime.realtime.settings import ENV, Fallback, Merge, RealtimeDeadError, RealtimeSettings, State
from policy_export.runtime.realtime.worker import Clock, InlineWorker, ManualClock, MonotonicClock, ThreadWorker

__all__ = [
    "ENV",
    "Clock",
    "Fallback",
    "InlineWorker",
    "ManualClock",
    "Merge",
    "MonotonicClock",
    "RealtimeClient",
    "RealtimeDeadError",
    "RealtimeSettings",
    "State",
    "StateCallback",
    "ThreadWorker",
    "Tick",
    "Worker",
]
