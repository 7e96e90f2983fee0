"""``a3d serve`` end to end against a real PACS: Debian's Orthanc routes CT series to the node
(``/modalities/{id}/store``) and receives the DICOM SEG and SR back, by C-STORE and by STOW-RS, in
the source study; the node is killed mid-job, its destination is down for a while, several series
arrive at once, a caller's AE title is not allowed, an MR series is refused."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pydicom
import pytest

from serve_support import (Orthanc, free_port, frame_uids, lesion_series, serve_command, series_state, start_node,
                           wait_for)

STUDY = "1.2.826.0.1.3680043.8.498.1901"


def _results(orthanc: Orthanc, study_uid: str, series_uid: str) -> dict[str, list[str]]:
    """Orthanc's SEG and SR instance ids in the study whose SEG references ``series_uid``."""
    out = {"SEG": [], "SR": []}
    for s in orthanc.study_series(study_uid):
        if s.get("Modality") in out:
            out[s["Modality"]] += s["Instances"]
    return out


def _seg_for(orthanc: Orthanc, study_uid: str, series_uid: str, sources: set[str]):
    """The SEG datasets in the study that reference images of ``sources``."""
    segs = [orthanc.instance(i) for i in _results(orthanc, study_uid, series_uid)["SEG"]]
    return [ds for ds in segs if frame_uids(ds) & sources]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc (AE ORTHANC) with the node as modality ``a3d`` and a not-allowed route ``stranger``
    (the same node, called with another AE title); the node sends back by C-STORE and by STOW-RS."""
    root = tmp_path_factory.mktemp("orthanc")
    node_port = free_port()
    orthanc = Orthanc(root / "orthanc", {"a3d": ("A3D", node_port)}).start()
    work = root / "node"
    node = start_node(work, node_port, "--send-to", orthanc.destination, "--stow", orthanc.url + "/dicom-web",
                      "--allow-ae", "ORTHANC", "--stable-seconds", "1", "--retry-seconds", "0.5", log=root / "node.log")
    yield orthanc, work, root / "node.log"
    node.terminate()
    assert node.wait(60) == 0, "a3d serve did not stop cleanly on SIGTERM"
    orthanc.stop()


def _route_and_wait(orthanc: Orthanc, work: Path, files: list[Path], timeout: float = 120) -> dict:
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    r = orthanc.route(orthanc.upload(files))
    assert r.ok, r.text
    done = wait_for(lambda: series_state(work).get(ds.SeriesInstanceUID, {}).get("state") in ("done", "failed")
                    and series_state(work)[ds.SeriesInstanceUID], timeout, what="the job to end")
    return done


def test_routed_series_gets_seg_and_sr_in_its_study(pacs, tmp_path):
    """A JPEG-LS compressed series (dcmcjpls) routed by Orthanc: the SEG and SR come back into the
    source study, by C-STORE and STOW-RS (Orthanc keeps one copy of each SOP instance)."""
    orthanc, work, _ = pacs
    plain = lesion_series(tmp_path / "plain", STUDY, STUDY + ".1")
    files = []
    for f in plain:
        out = tmp_path / "jls" / f.name
        out.parent.mkdir(exist_ok=True)
        subprocess.run(["dcmcjpls", str(f), str(out)], check=True)
        files.append(out)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    row = _route_and_wait(orthanc, work, files)
    assert row["state"] == "done", row
    assert row["instances"] == len(files) and row["candidates"] == 1
    assert {s["destination"]: s["state"] for s in row["sends"]} == {orthanc.destination: "done",
                                                                      orthanc.url + "/dicom-web": "done"}
    found = _results(orthanc, STUDY, STUDY + ".1")
    assert len(found["SEG"]) == 1 and len(found["SR"]) == 1
    seg = orthanc.instance(found["SEG"][0])
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert seg.StudyInstanceUID == STUDY and frame_uids(seg) <= sources and len(frame_uids(seg)) == 6
    assert seg.SeriesInstanceUID != STUDY + ".1"


def test_several_series_at_once(pacs, tmp_path):
    """Three series routed together (Orthanc's asynchronous store jobs): each gets its SEG and SR."""
    import requests

    orthanc, work, _ = pacs
    study = STUDY + ".2"
    uids = [f"{study}.{k}" for k in range(3)]
    ids = [orthanc.upload(lesion_series(tmp_path / u, study, u, slices=8)) for u in uids]
    for i in ids:
        assert requests.post(f"{orthanc.url}/modalities/a3d/store", json={"Resources": [i], "Asynchronous": True},
                             timeout=30).ok
    wait_for(lambda: all(series_state(work).get(u, {}).get("state") == "done" for u in uids), 180,
             what="three jobs to be done")
    series = orthanc.study_series(study)
    assert sorted(s["Modality"] for s in series) == ["CT"] * 3 + ["SEG"] * 3 + ["SR"] * 3


def test_not_allowed_ae_title_is_rejected(pacs, tmp_path):
    orthanc, work, log = pacs
    files = lesion_series(tmp_path / "s", STUDY + ".3", STUDY + ".3.1", slices=4)
    r = orthanc.route(orthanc.upload(files), LocalAet="STRANGER")
    assert not r.ok
    assert STUDY + ".3.1" not in series_state(work)
    wait_for(lambda: "association from STRANGER@" in log.read_text() and "rejected" in log.read_text(), 10,
             what="the rejection's log line")


def test_mr_series_is_refused_and_the_node_goes_on(pacs, tmp_path):
    orthanc, work, log = pacs
    study = STUDY + ".4"
    mr = lesion_series(tmp_path / "mr", study, study + ".1", slices=3, modality="MR")
    for f in mr:  # an MR image, as an MR scanner stores it
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.save_as(f)
    r = orthanc.route(orthanc.upload(mr))
    assert not r.ok
    assert study + ".1" not in series_state(work)
    # Orthanc stops its store job at the first failure status: one instance refused
    wait_for(lambda: "0 instances stored, 1 refused (1 x MR Image Storage: not a CT image)" in log.read_text(), 10,
             what="the refusal's log line")
    row = _route_and_wait(orthanc, work, lesion_series(tmp_path / "ct", study, study + ".2", slices=6))
    assert row["state"] == "done"


def test_sigkill_mid_job_then_destination_down(tmp_path):
    """SIGKILL while a job runs: after a restart the job runs again and its results are sent once.
    Then a series whose destination is down: the send is retried (visible in status), the node is
    killed while sending, and after a restart with the PACS back, the same SEG (same SOP Instance
    UID) arrives."""
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", {"a3d": ("A3D", node_port)}).start()
    down = Orthanc(tmp_path / "orthanc2", {}, aet="ARCHIVE")  # configured, not started yet
    work = tmp_path / "node"
    args = ("--send-to", orthanc.destination, "--send-to", down.destination, "--stable-seconds", "1",
            "--retry-seconds", "0.5", "--send-attempts", "1000")
    try:
        node = start_node(work, node_port, *args, forward_s=0.4)
        files = lesion_series(tmp_path / "s", STUDY + ".5", STUDY + ".5.1", slices=10)
        assert orthanc.route(orthanc.upload(files)).ok
        uid = STUDY + ".5.1"
        wait_for(lambda: series_state(work).get(uid, {}).get("state") == "running", 60, what="the job to run")
        node.send_signal(signal.SIGKILL)
        node.wait(30)
        assert series_state(work)[uid]["state"] == "running"
        node = start_node(work, node_port, *args)
        wait_for(lambda: any(s["destination"] == down.destination and s["attempts"] >= 2
                             for s in series_state(work).get(uid, {}).get("sends", [])), 60, what="retries")
        status = subprocess.run(serve_command(work, 0)[:2] + ["serve", "status", "--work-dir", str(work)],
                                capture_output=True, text=True, check=True).stdout
        assert f"sending  {uid}" in status and f"{down.destination} pending after" in status
        row = series_state(work)[uid]
        assert row["job"] == 1 and {s["destination"]: s["state"] for s in row["sends"]}[orthanc.destination] == "done"
        sent_seg = pydicom.dcmread(work / "results" / uid / "dicom" / "seg.dcm", stop_before_pixels=True)
        node.send_signal(signal.SIGKILL)
        node.wait(30)
        down.start()
        node = start_node(work, node_port, *args)
        wait_for(lambda: series_state(work)[uid]["state"] == "done", 60, what="the send after the PACS came back")
        archived = _results(down, STUDY + ".5", uid)
        assert len(archived["SEG"]) == 1 and len(archived["SR"]) == 1
        assert down.instance(archived["SEG"][0]).SOPInstanceUID == sent_seg.SOPInstanceUID
        first = _results(orthanc, STUDY + ".5", uid)
        assert len(first["SEG"]) == 1 and len(first["SR"]) == 1  # sent once, not again after the restarts
        node.terminate()
        assert node.wait(60) == 0
        doc = json.loads(subprocess.run(serve_command(work, 0)[:2] + ["serve", "status", "--work-dir", str(work),
                                                                          "--json"], capture_output=True, text=True,
                                        check=True).stdout)
        assert [s["state"] for s in doc["series"]] == ["done"]
    finally:
        for p in (orthanc, down):
            p.stop()
