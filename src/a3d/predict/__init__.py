"""Whole-scan lesion detection (``a3d predict``): a CT scan in, detections, 3D candidates and files out.

Data flow, one module per arrow (docs/predict.md describes each step for users)::

    scan (a3d.data.scans.read_scan: HU, canonical LPS orientation, geometry)
      -> context inputs   inference.ContextBuilder: D slices at cfg.data.context_spacing_mm, fitted
                          in-plane into cfg.data.size (geometry.InplaneFit), HU -> [-50, 205]
      -> detections       inference.run_model / predict_scan: model(x, thickness=slice interval) in
                          batches; boxes and masks mapped back to the slice (geometry), measured
                          (measurements.diameters)
      -> candidates       candidates.suppress_duplicates (per slice), suppress_fragments (tracks
                          that are parts of a better one), group_candidates: boxes on adjacent slices linked
                          one-to-one into tracks
      -> files            outputs.write_outputs: records (JSON, CSV), overlays (PNG), labels (NIfTI),
                          report (HTML)

``run.predict_input`` strings these together for the command line, with the checkpoint loaded by
``loading.load_predictor`` (a typed :class:`a3d.config.Config` travels with the model from there on);
``scan_job.predict_into`` is one scan into a folder with a loaded model, ``batch.run_batch`` a folder
of scans (resumable: ``resume``; read ahead: ``prefetch``; shared among torchrun's ranks: ``ranks``).
"""

from a3d.predict.candidates import candidate_info, group_candidates, suppress_duplicates, suppress_fragments
from a3d.predict.geometry import InplaneFit, canonical_to_original_slices, key_slices
from a3d.predict.inference import ContextBuilder, predict_scan, run_model
from a3d.predict.loading import check_device, load_predictor
from a3d.predict.measurements import diameters
from a3d.predict.outputs import OutputOptions, write_outputs
from a3d.predict.records import CANDIDATE_COLUMNS, DETECTION_COLUMNS, detection_record, result_dict
from a3d.predict.results import Candidate, Detection, PredictionResult, PredictSettings
from a3d.predict.batch import BatchJob, run_batch, write_batch_summary
from a3d.predict.run import PredictRun, list_series, predict_input
from a3d.predict.scan_job import ReadOptions, ScanOutcome, predict_into, read_input

__all__ = [
    "BatchJob", "CANDIDATE_COLUMNS", "Candidate", "ContextBuilder", "DETECTION_COLUMNS", "Detection", "InplaneFit",
    "OutputOptions", "PredictRun", "PredictSettings", "PredictionResult", "ReadOptions", "ScanOutcome",
    "canonical_to_original_slices", "candidate_info", "check_device", "detection_record", "diameters",
    "group_candidates", "key_slices", "list_series", "load_predictor", "predict_input", "predict_into",
    "predict_scan", "read_input", "result_dict", "run_batch", "run_model", "suppress_duplicates",
    "suppress_fragments", "write_batch_summary", "write_outputs",
]
