"""Prometheus text format: render a client's stats, read a server's ``/metrics``.

Why here: a fleet is watched with the same tool on both ends. Triton's metrics endpoint
speaks Prometheus text (``nv_inference_request_success``, ``nv_inference_queue_duration_us``,
...); a robot's client should be scrapeable beside it without a Prometheus library on the
robot, so this is stdlib only (numbers may be numpy scalars).

Rendering follows the exposition format 0.0.4: ``# HELP`` / ``# TYPE`` once per family,
label values escaped, counters for monotonically increasing figures (names ending
``_total``, or listed), gauges for the rest, and a text field (a client state such as
``STREAMING``) as a state set: one sample per value seen with the current one at 1.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def metric_name(*parts: str) -> str:
    """Join and sanitise into a legal metric name (``a.b-c`` -> ``a_b_c``)."""
    name = _NAME_BAD.sub("_", "_".join(p for p in parts if p))
    return f"_{name}" if name[:1].isdigit() else name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{metric_name(k)}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _as_mapping(stats: object) -> Mapping[str, Any]:
    if isinstance(stats, Mapping):
        return stats
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    for attr in ("to_dict", "_asdict"):
        if callable(getattr(stats, attr, None)):
            return getattr(stats, attr)()
    raise TypeError(f"cannot render {type(stats).__name__} as metrics: give a mapping or a dataclass")


def _flatten(stats: object, prefix: str) -> Iterable[tuple[str, Any]]:
    for key, value in _as_mapping(stats).items():
        name = metric_name(prefix, str(key))
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            yield from _flatten(value, name)
        else:
            yield name, value


def render_prometheus(
    stats: object,
    *,
    prefix: str = "policy_export_client",
    labels: Mapping[str, str] | None = None,
    counters: Iterable[str] = (),
    help_text: Mapping[str, str] | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """``stats`` (a mapping or dataclass, nested ones flattened with ``_``) as Prometheus text.

    Numbers and bools become samples; strings become a state set; None and lists are skipped
    (they have no single value to plot). ``counters`` names keys (unprefixed) that only grow.
    ``labels`` go on every sample, e.g. ``{"robot": "3", "model": "act"}`` so that many
    clients aggregate in one query. ``exclude`` names keys (unprefixed) left out, such as free
    text that would make one label value per error message.
    """
    labels = dict(labels or {})
    excluded = {metric_name(prefix, e) for e in exclude}
    counter_names = {metric_name(prefix, c) for c in counters}
    help_text = {metric_name(prefix, k): v for k, v in (help_text or {}).items()}
    lines: list[str] = []
    for name, value in _flatten(stats, prefix):
        if name in excluded or value is None or isinstance(value, (list, tuple, set, bytes)):
            continue
        if isinstance(value, str):
            lines.append(f"# HELP {name} {help_text.get(name, 'state; the current value is 1')}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{_labels({**labels, 'state': value})} 1")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        kind = "counter" if name in counter_names or name.endswith("_total") else "gauge"
        if name in help_text:
            lines.append(f"# HELP {name} {help_text[name]}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{_labels(labels)} {_number(number)}")
    return "\n".join(lines) + "\n"


#: ``RealtimeClient.stats()`` keys that only grow (Prometheus counters; the rest are gauges).
REALTIME_COUNTERS = (
    "steps",
    "chunks_requested",
    "chunks_received",
    "actions_skipped_latency",
    "stale_dropped",
    "fallback_ticks",
    "reconnects",
    "failures",
)
REALTIME_HELP = {
    "fallback_ticks": "control ticks served by the fallback action (no usable model action)",
    "actions_skipped_latency": "actions skipped because their step had passed when the chunk arrived",
    "chunk_ms_p50": "chunk round trip, median over the last chunks (ms)",
    "chunk_ms_p99": "chunk round trip, 99th percentile over the last chunks (ms)",
    "streaming_fraction": "share of the time spent STREAMING",
}


def realtime_prometheus(stats: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """``RealtimeClient.stats()`` as Prometheus text (``policy_export_realtime_*``), e.g. for a
    robot's own ``/metrics`` beside Triton's. The last error's text is left out: one label value
    per message is not a metric."""
    return render_prometheus(
        stats,
        prefix="policy_export_realtime",
        labels=labels,
        counters=REALTIME_COUNTERS,
        help_text=REALTIME_HELP,
        exclude=("last_error",),
    )


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample in Prometheus text (comments skipped); malformed lines raise ValueError."""
    samples = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"line {number} is not a Prometheus sample: {raw[:120]!r}")
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(3) or "")}
        samples.append(Sample(m.group(1), labels, float(m.group(4))))
    return samples


def metric_total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels`` (0 when none)."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def scrape(url: str, timeout_s: float = 5.0) -> list[Sample]:
    """GET a ``/metrics`` endpoint (Triton's, or one serving :func:`render_prometheus` text)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return parse_prometheus(resp.read().decode("utf-8", "replace"))
