"""The DICOM Structured Report (``--dicom``): a TID 1500 Measurement Report (Comprehensive 3D SR).

Per candidate, under one tracking identifier (the UID its SEG segment carries), on the source image
of the slice its diameters were measured on (``measured_on_slice``):

- a measurement group (TID 1501): the long and short axis in mm, each inferred from its two end
  points, as a polyline on that image (SCOORD, column/row) and in the source's Frame of Reference
  (SCOORD3D, LPS mm), and the score (TID 1410 allows no coordinates on measurements);
- a planar ROI group (TID 1410): that detection's box as a closed polyline (the region), the score;
- a volumetric ROI group (TID 1411) referencing the candidate's segment in the SEG: the volume
  (mm3) and the score.

Image references carry the frame number when the source is multi-frame. Evidence: every source
image of the series (a multi-frame source once) and the SEG. Same study, patient and Frame of
Reference as the source (copied from it by highdicom), new series.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from a3d import __version__
from a3d.predict.candidates import measured_detection
from a3d.predict.dicom_refs import image_polyline, source_dataset, source_frame, source_slices
from a3d.predict.dicom_seg import MANUFACTURER, SR_SERIES_NUMBER
from a3d.predict.results import Candidate, Detection, PredictionResult

# a3d's own concept for the detector's score (no standard code names an uncalibrated detector score)
SCORE = hd.sr.CodedConcept(value="A3D-SCORE", scheme_designator="99A3D", meaning="Lesion candidate score")


def _algorithm() -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name="a3d predict", version=__version__)


def _number(name, value: float, unit, coords: list | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=_algorithm(),
                             referenced_coordinates=coords)


def _source_ref(res: PredictionResult, k: int, kind=hd.sr.SourceImageForRegion):
    """``kind`` (a highdicom image reference) to the source image of original slice ``k``, with its
    frame number when the source is multi-frame."""
    ds = source_dataset(res.scan, k)
    frame = source_frame(res.scan, k)
    return kind(referenced_sop_class_uid=ds.SOPClassUID, referenced_sop_instance_uid=ds.SOPInstanceUID,
                referenced_frame_numbers=[frame] if frame is not None else None)


def _axis(res: PredictionResult, d: Detection, key: str, name) -> list[hd.sr.Measurement]:
    """The long or short axis of ``d`` as a measurement inferred from its two end points: on the
    source image (SCOORD, column/row) and in the patient frame of reference (SCOORD3D, LPS mm)."""
    ends = np.reshape(d.measures.get(f"{key}_axis_px") or [], (-1, 2))
    if not len(ends):
        return []
    scan = res.scan
    k, pts = image_polyline(scan, ends, d.z)
    lps = np.array([scan.physical_point(x - 0.5, y - 0.5, d.z) for x, y in ends])
    coords = [hd.sr.CoordinatesForMeasurement(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=pts,
                                              source_image=_source_ref(res, k)),
              hd.sr.CoordinatesForMeasurement3D(graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE, graphic_data=lps,
                                                frame_of_reference_uid=source_dataset(scan, k).FrameOfReferenceUID)]
    return [_number(name, d.measures[f"{key}_mm"], codes.UCUM.Millimeter, coords)]


def axes_group(res: PredictionResult, c: Candidate, tracking: hd.sr.TrackingIdentifier):
    """TID 1501: long and short axis (each inferred from its two end points) and score on the measured slice."""
    d = measured_detection(c)
    k, _ = image_polyline(res.scan, d.box[:2], d.z)
    measurements = (_axis(res, d, "long", codes.SCT.LongAxis) + _axis(res, d, "short", codes.SCT.ShortAxis)
                    + [_number(SCORE, c.info["max_score"], codes.UCUM.NoUnits)])
    source = _source_ref(res, k, hd.sr.SourceImageForMeasurementGroup)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, finding_type=codes.SCT.Lesion, algorithm_id=_algorithm(),
        measurements=measurements, source_images=[source])


def planar_group(res: PredictionResult, c: Candidate, tracking: hd.sr.TrackingIdentifier):
    """TID 1410: the measured detection's box (a closed polyline on its source image) and the score."""
    d = measured_detection(c)
    x1, y1, x2, y2 = d.box
    k, box = image_polyline(res.scan, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]), d.z)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box,
                               source_image=_source_ref(res, k))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=codes.SCT.Lesion,
        algorithm_id=_algorithm(), measurements=[_number(SCORE, c.info["max_score"], codes.UCUM.NoUnits)])


def volumetric_group(res: PredictionResult, c: Candidate, tracking: hd.sr.TrackingIdentifier, seg: hd.seg.Segmentation):
    """TID 1411: the candidate's segment in the SEG, its volume (mm3) and score."""
    segment = hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                      segment_number=c.id,
                                      source_series=hd.sr.SourceSeriesForSegmentation(
                                          source_dataset(res.scan, source_slices(res.scan)[0]).SeriesInstanceUID))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_segment=segment, finding_type=codes.SCT.Lesion,
        algorithm_id=_algorithm(),
        measurements=[_number(codes.SCT.Volume, c.info["volume_mm3"], codes.UCUM.CubicMillimeter),
                      _number(SCORE, c.info["max_score"], codes.UCUM.NoUnits)])


def measurement_report(res: PredictionResult, tracking_uids: dict[int, str], seg: hd.seg.Segmentation | None,
                       series_uid: str, instance_number: int = 1) -> hd.sr.Comprehensive3DSR:
    """The SR of ``res`` (at least one candidate), a new instance in the series ``series_uid``: three
    groups per candidate, two without ``seg``."""
    groups = []
    for c in sorted(res.candidates, key=lambda c: c.id):
        tracking = hd.sr.TrackingIdentifier(uid=tracking_uids[c.id], identifier=f"a3d candidate {c.id}")
        groups += [axes_group(res, c, tracking), planar_group(res, c, tracking)]
        if seg is not None:
            groups.append(volumetric_group(res, c, tracking, seg))
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="a3d predict", manufacturer_name=MANUFACTURER)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                     imaging_measurements=groups)
    unique = {res.scan.source_headers[k].SOPInstanceUID: k for k in reversed(source_slices(res.scan))}
    evidence = [source_dataset(res.scan, k) for k in sorted(unique.values())] + ([seg] if seg is not None else [])
    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=series_uid, series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER, is_complete=True,
        series_description="a3d measurement report")
