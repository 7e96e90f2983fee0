"""The DICOM Segmentation (``--dicom``): one binary segment per 3D candidate on the source CT images.

Built with highdicom from the label volume of ``labels.nii.gz`` (:func:`a3d.predict.labels.label_volume`),
taken at the slices that have a source image (for a multi-frame source: placed at each slice's frame
number, so highdicom references the frames), so the two agree voxel for voxel; where candidates
overlap, the voxel belongs to the higher-scoring one (lower id) in both. Frames without any
candidate are left out; interpolated slices have no source image and are never segmented. The SEG
belongs to the source study (Study Instance UID, patient, Frame of Reference copied from the source
images) in a new series.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from a3d import __version__
from a3d.predict.dicom_refs import label_frames, source_dataset, source_frame
from a3d.predict.results import PredictionResult

MANUFACTURER = "a3d"
SEG_SERIES_NUMBER = 9301
SR_SERIES_NUMBER = 9302


def algorithm() -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name="a3d predict", family=codes.cid7162.ArtificialIntelligence,
                                              version=__version__)


def segment_description(cid: int, score: float, tracking_uid: str) -> hd.seg.SegmentDescription:
    """Segment ``cid``: a lesion found automatically; its score in SegmentDescription."""
    desc = hd.seg.SegmentDescription(
        segment_number=cid, segment_label=f"candidate {cid}",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm(), tracking_uid=tracking_uid, tracking_id=f"a3d candidate {cid}")
    desc.SegmentDescription = f"a3d lesion candidate {cid}, score {score:.3f}"
    return desc


def _sources_and_pixels(res: PredictionResult) -> tuple[list, np.ndarray]:
    """The source datasets and the label frames aligned with them: one per single-frame source
    image, or the multi-frame source once with one label frame per source frame (zeros where a
    frame is not a slice of the volume)."""
    labels, ks = label_frames(res)
    scan = res.scan
    frames = [source_frame(scan, k) for k in ks]
    if frames[0] is None:
        return [source_dataset(scan, k) for k in ks], labels
    source = source_dataset(scan, ks[0])
    pixels = np.zeros((int(source.NumberOfFrames),) + labels.shape[1:], dtype=labels.dtype)
    pixels[np.asarray(frames) - 1] = labels
    return [source], pixels


def segmentation(res: PredictionResult, tracking_uids: dict[int, str], series_uid: str,
                 instance_number: int = 1) -> hd.seg.Segmentation:
    """The SEG of ``res`` (at least one candidate: a SEG needs a segment), a new instance in the series
    ``series_uid``. ``tracking_uids``: candidate id -> the UID the SR uses for the same finding."""
    sources, labels = _sources_and_pixels(res)
    descs = [segment_description(c.id, c.info["max_score"], tracking_uids[c.id])
             for c in sorted(res.candidates, key=lambda c: c.id)]
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=labels, segmentation_type="BINARY",
        segment_descriptions=descs, series_instance_uid=series_uid, series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name="a3d predict", software_versions=__version__, device_serial_number="0",
        series_description="a3d lesion candidates", content_label="A3D_LESIONS",
        content_description="a3d predict: lesion candidates", omit_empty_frames=True)
