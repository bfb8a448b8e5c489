"""Long-document summaries: a plan computed (and shown) before any work, then its execution.

Modules by job: ``facts`` (model facts, context window, options), ``tokens`` (counting as the
engine encodes), ``prompts`` (the requests' words), ``splitting`` (parts at paragraph and
heading boundaries), ``planning`` (``SummaryPlan`` and how it is chosen), ``running``
(``run_summary``'s single pass or map-reduce), ``events`` and ``progress`` (what a run reports
and how a progress bar reads it).
"""

from mlx_backend.documents.summary.events import PartSummary, PartWriting, SummaryProgress, SummaryRequestStarted
from mlx_backend.documents.summary.facts import ModelFacts, SummaryOptions, context_limits
from mlx_backend.documents.summary.planning import SummaryPlan, follow_up_request, plan_for_engine, plan_summary
from mlx_backend.documents.summary.progress import PrefillPace, SummaryTracker
from mlx_backend.documents.summary.running import run_summary
from mlx_backend.documents.summary.splitting import split_blocks, split_into_parts

__all__ = [
    "ModelFacts",
    "PartSummary",
    "PartWriting",
    "PrefillPace",
    "SummaryOptions",
    "SummaryPlan",
    "SummaryProgress",
    "SummaryRequestStarted",
    "SummaryTracker",
    "context_limits",
    "follow_up_request",
    "plan_for_engine",
    "plan_summary",
    "run_summary",
    "split_blocks",
    "split_into_parts",
]
