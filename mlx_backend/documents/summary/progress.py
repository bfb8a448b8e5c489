"""What a progress bar shows of a summary run, shared by the CLI and the app."""

from __future__ import annotations

import time
from typing import Callable, Optional

from mlx_backend.documents.summary.events import SummaryProgress
from mlx_backend.events import AnswerDelta, Finished, PrefillProgress, ThinkingDelta


class SummaryTracker:
    """Turns a summary's event stream into what a progress bar shows: a step label, the whole
    run's fraction, the current prefill's fraction and ETAs. Shared by the CLI and the app.

    Map-reduce weighs every part (and the final combine) as one step; merge rounds are short
    and count as part of the combine step."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts = 0  # learnt from the first "map" step: a job may re-plan before it runs
        self._clock = clock
        self._started = clock()
        self.stage: Optional[SummaryProgress] = None
        self.prefill_fraction = 0.0
        self.prefill_eta_s: Optional[float] = None
        self.answering = False
        self.done = False

    def feed(self, event: object) -> bool:
        """Take one event; True when the display should change."""
        if isinstance(event, SummaryProgress):
            self.stage, self.prefill_fraction, self.prefill_eta_s = event, 0.0, None
            if event.stage == "map":
                self._parts = event.parts
            return True
        if isinstance(event, PrefillProgress) and event.total > 0:
            self.prefill_fraction = min(1.0, event.done / event.total)
            self.prefill_eta_s = event.eta_s if event.done < event.total else 0.0
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
            return "Writing the summary" if self.answering else "Reading the document"
        if stage.stage == "map":
            return f"Summarizing part {stage.part} of {stage.parts}"
        if stage.stage == "reduce":
            return f"Merging part summaries ({stage.part} of {stage.parts})"
        return "Writing the summary" if self.answering else "Combining the part summaries"

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
        """Time left for the reading/summarizing steps, from the pace so far (None: too early)."""
        if self.done:
            return 0.0
        if self.stage is not None and self.stage.stage == "single":
            return self.prefill_eta_s
        fraction = self.fraction
        if fraction < 0.02:
            return None
        return self.elapsed_s * (1.0 - fraction) / fraction
