"""What a progress bar shows of a summary run, shared by the CLI and the app."""

from __future__ import annotations

import time
from typing import Callable, Optional

from mlx_backend.documents.summary.events import PartWriting, SummaryProgress
from mlx_backend.events import AnswerDelta, Finished, PrefillProgress, ThinkingDelta


class PrefillPace:
    """This model's prefill speed on this machine, measured in this run.

    Prefill slows as the prompt grows (attention reads all earlier tokens), so a straight
    tokens/s extrapolation from the first chunks promises far too little ("about 10 s left"
    for a prefill that took 88 s). The time of each request is fitted as
    ``t = a·n + b·n²`` over its own progress events (least squares, from its first event), and
    the fit of earlier requests stands in while a new one has too few points."""

    def __init__(self) -> None:
        self._points: list[tuple[int, float]] = []  # (tokens done, seconds) in this request
        self._fit: Optional[tuple[float, float]] = None  # (a, b), the latest good fit

    def start_request(self) -> None:
        self._points = []

    def observe(self, done: int, now: float) -> None:
        if self._points and done < self._points[-1][0]:
            self._points = []  # a new request without start_request (restarted prefill)
        self._points.append((done, now))
        fit = self._fitted()
        if fit is not None:
            self._fit = fit

    @property
    def tokens_per_s(self) -> Optional[float]:
        """The average speed of the current request so far (None: too early)."""
        if len(self._points) < 2:
            return None
        (n0, t0), (n, t) = self._points[0], self._points[-1]
        return (n - n0) / (t - t0) if t > t0 and n > n0 else None

    def seconds_left(self, total: int) -> Optional[float]:
        """Time to prefill up to ``total`` tokens from where the current request is."""
        if self._fit is None:
            return None
        a, b = self._fit
        done = self._points[-1][0] if self._points else 0
        if done >= total:
            return 0.0
        return max(0.0, a * (total - done) + b * (total * total - done * done))

    def _fitted(self) -> Optional[tuple[float, float]]:
        if len(self._points) < 2:
            return None
        n0, t0 = self._points[0]
        rows = [(n - n0, n * n - n0 * n0, t - t0) for n, t in self._points[1:] if n > n0]
        if not rows or rows[-1][2] <= 0:
            return None
        s11 = sum(x1 * x1 for x1, _, _ in rows)
        s12 = sum(x1 * x2 for x1, x2, _ in rows)
        s22 = sum(x2 * x2 for _, x2, _ in rows)
        s1t = sum(x1 * t for x1, _, t in rows)
        s2t = sum(x2 * t for _, x2, t in rows)
        det = s11 * s22 - s12 * s12
        if len(rows) >= 2 and det > 1e-9 * s11 * s22:
            a = (s1t * s22 - s2t * s12) / det
            b = (s2t * s11 - s1t * s12) / det
            if a >= 0 and b >= 0:
                return a, b
        return (s1t / s11, 0.0) if s11 else None  # too few points, or noise: straight line


class SummaryTracker:
    """Turns a summary's event stream into what a progress bar shows: a step label, the whole
    run's fraction, the current prefill's fraction and ETAs. Shared by the CLI and the app.

    Map-reduce weighs every part (and the final combine) as one step; merge rounds are short
    and count as part of the combine step. ETAs come from what this run measured: the prefill
    pace (``PrefillPace``) and, once a step has finished, how long steps take."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts = 0  # learnt from the first "map" step: a job may re-plan before it runs
        self._clock = clock
        self._started = clock()
        self._step_started = self._started
        self._step_durations: list[float] = []
        self._pace = PrefillPace()
        self._prefill_total = 0
        self.stage: Optional[SummaryProgress] = None
        self.prefill_fraction = 0.0
        self.prefill_eta_s: Optional[float] = None
        self.part_tokens = 0  # tokens of the part summary being written
        self.answering = False
        self.done = False

    def feed(self, event: object) -> bool:
        """Take one event; True when the display should change."""
        now = self._clock()
        if isinstance(event, SummaryProgress):
            if self.stage is not None and self.stage.stage in ("map", "single"):
                self._step_durations.append(now - self._step_started)
            self._step_started = now
            self.stage, self.prefill_fraction, self.prefill_eta_s = event, 0.0, None
            self.part_tokens = 0
            self._pace.start_request()
            if event.stage == "map":
                self._parts = event.parts
            return True
        if isinstance(event, PrefillProgress) and event.total > 0:
            self._pace.observe(event.done, now)
            self._prefill_total = event.total
            self.prefill_fraction = min(1.0, event.done / event.total)
            self.prefill_eta_s = self._pace.seconds_left(event.total) if event.done < event.total else 0.0
            return True
        if isinstance(event, PartWriting):
            self.part_tokens = event.tokens
            return True
        if isinstance(event, (AnswerDelta, ThinkingDelta)) and not self.answering and self.is_final_step:
            self.answering = True
            return True
        if isinstance(event, Finished):
            self.done = True
            return True
        return False

    @property
    def is_final_step(self) -> bool:
        return self.stage is not None and self.stage.stage in ("single", "combine")

    @property
    def label(self) -> str:
        stage = self.stage
        if self.done:
            return "Done"
        if stage is None:
            return "Starting"
        if stage.stage == "single":
            if self.answering:
                return "Writing the summary"
            return "Reading the document" if stage.documents == 1 else f"Reading the {stage.documents} documents"
        if stage.stage == "map":
            return f"Summarizing part {stage.part} of {stage.parts}"
        if stage.stage == "reduce":
            return f"Merging part summaries ({stage.part} of {stage.parts})"
        return "Writing the summary" if self.answering else "Combining the part summaries"

    @property
    def prefill_tokens_per_s(self) -> Optional[float]:
        return self._pace.tokens_per_s

    @property
    def fraction(self) -> float:
        """The whole run's progress, 0..1 (the final answer's generation is not counted)."""
        if self.done:
            return 1.0
        stage = self.stage
        if stage is None:
            return 0.0
        if stage.stage == "single":
            return self.prefill_fraction
        steps = self._parts + 1
        if stage.stage == "map":
            return min(1.0, (stage.part - 1 + self.prefill_fraction) / steps)
        return min(1.0, (self._parts + (self.prefill_fraction if stage.stage == "combine" else 0.0)) / steps)

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    @property
    def eta_s(self) -> Optional[float]:
        """Time left for the reading/summarizing steps, from this run's measured pace (None: too early)."""
        if self.done:
            return 0.0
        stage = self.stage
        if stage is not None and stage.stage == "single":
            return self.prefill_eta_s
        if stage is not None and stage.stage == "map" and self._step_durations:
            # Finished parts say how long a part takes here; the current one is partly done.
            per_step = sum(self._step_durations) / len(self._step_durations)
            in_step = self._clock() - self._step_started
            current = max(self.prefill_eta_s or 0.0, per_step - in_step)
            return current + per_step * (stage.parts - stage.part + 1)  # the rest and the combine
        fraction = self.fraction
        if fraction < 0.02:
            return None
        return self.elapsed_s * (1.0 - fraction) / fraction
