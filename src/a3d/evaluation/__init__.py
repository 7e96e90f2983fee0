"""DeepLesion evaluation: FROC, breakdowns, predictions files, metrics, plots and reports; and the
volume-level LUNA16 FROC (:mod:`a3d.evaluation.froc3d`).

numpy only (matplotlib for plots, imported when a plot is drawn); never imports torch or a model.
The protocol is documented in ``docs/evaluation.md`` and :mod:`a3d.evaluation.froc`.
"""

from a3d.evaluation.breakdown import (
    DEFAULT_DIAMETER_THRESHOLDS,
    DEFAULT_INTERVAL_BINS,
    LESION_TYPES,
    breakdowns,
    diameter_bins,
)
from a3d.evaluation.bootstrap import bootstrap_ci, bootstrap_sensitivities
from a3d.evaluation.froc import (
    DEFAULT_FPS,
    Classification,
    FROCResult,
    classify,
    froc,
    froc_from_classification,
    iou_inclusive,
    sensitivity_at,
)
from a3d.evaluation.froc3d import LUNA16_FPS, Candidates, Findings, FROC3DResult, froc3d
from a3d.evaluation.froc3d_bootstrap import bootstrap_froc3d, froc3d_ci
from a3d.evaluation.froc3d_io import read_candidates, read_findings, read_scan_list
from a3d.evaluation.froc3d_outputs import write_froc3d
from a3d.evaluation.groundtruth import (
    GroundTruth,
    ImageGroundTruth,
    ground_truth_from_boxes,
    ground_truth_from_records,
    split_code,
)
from a3d.evaluation.metrics import (
    align_predictions,
    evaluate_predictions,
    metrics_to_markdown,
    read_metrics,
    write_evaluation,
    write_metrics,
)
from a3d.evaluation.predictions import ImagePredictions, load_predictions, save_predictions
from a3d.evaluation.report import write_report


__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_INTERVAL_BINS",
    "DEFAULT_DIAMETER_THRESHOLDS",
    "LESION_TYPES",
    "LUNA16_FPS",
    "Candidates",
    "Classification",
    "FROC3DResult",
    "FROCResult",
    "Findings",
    "GroundTruth",
    "ImageGroundTruth",
    "ImagePredictions",
    "align_predictions",
    "bootstrap_ci",
    "bootstrap_froc3d",
    "bootstrap_sensitivities",
    "breakdowns",
    "classify",
    "diameter_bins",
    "evaluate_predictions",
    "froc",
    "froc3d",
    "froc3d_ci",
    "froc_from_classification",
    "ground_truth_from_boxes",
    "ground_truth_from_records",
    "iou_inclusive",
    "load_predictions",
    "metrics_to_markdown",
    "read_candidates",
    "read_findings",
    "read_metrics",
    "read_scan_list",
    "save_predictions",
    "sensitivity_at",
    "split_code",
    "write_evaluation",
    "write_froc3d",
    "write_metrics",
    "write_report",
]
