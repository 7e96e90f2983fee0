"""Shared pieces of the ``a3d serve`` tests: small CT series with a planted lesion, a C-STORE SCU,
a Storage SCP standing in for a PACS, the node run in-process or as a subprocess (tests/predict_runner.py:
the command line with the blob stand-in detector), and free loopback ports."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
import requests
from pynetdicom import AE, AllStoragePresentationContexts, evt

from a3d.serve.queue import Queue
from dicom_fixtures import write_slices
from test_predict_support import phantom

REPO = Path(__file__).resolve().parents[1]
LESION_HU = 1800.0  # the blob stand-in (150 HU) finds it, not the phantom's soft tissue (40 HU)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lesion_series(folder: Path, study_uid: str, series_uid: str, slices: int = 10, modality: str = "CT",
                  prefix: str = "ct") -> list[Path]:
    """A 64 x 64 phantom series of ``slices`` slices with one bright lesion (6 slices, 10 x 12 px)."""
    vol = phantom((slices, 64, 64), seed=len(series_uid))
    vol[2:8, 20:30, 24:36] = LESION_HU
    return write_slices(folder, vol, series_uid=series_uid, study_uid=study_uid, modality=modality, prefix=prefix)


def c_store(files: list[Path], port: int, called: str = "A3D", calling: str = "PACS", host: str = "127.0.0.1",
            tls_args=None) -> list[int | None]:
    """C-STORE ``files`` on one association; each one's status (None: no association or no answer)."""
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(host, port, ae_title=called, tls_args=tls_args)
    if not assoc.is_established:
        return [None] * len(files)
    try:
        return [getattr(assoc.send_c_store(ds), "Status", None) for ds in datasets]
    finally:
        assoc.release()


class FakePacs:
    """A Storage SCP (pynetdicom) that keeps what it receives in ``received`` (SOP Instance UID ->
    dataset); ``down()`` closes its port, ``up()`` opens it again."""

    def __init__(self, ae_title: str = "PACS"):
        self.ae_title, self.port = ae_title, free_port()
        self.received: dict[str, pydicom.Dataset] = {}
        self.stores = 0
        self._server = None

    def up(self) -> "FakePacs":
        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received[str(ds.SOPInstanceUID)] = ds
            self.stores += 1
            return 0x0000

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1, what: str = "condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def serve_command(work: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "tests" / "predict_runner.py"), "serve", "--checkpoint", "standin.pt",
            "--work-dir", str(work), "--port", str(port), "--device", "cpu", *extra]


def start_node(work: Path, port: int, *extra: str, forward_s: float = 0.0, log: Path | None = None) -> subprocess.Popen:
    """The node as a subprocess; returns once its port accepts connections."""
    env = {**os.environ, "A3D_TEST_FORWARD_S": str(forward_s), "PYTHONUNBUFFERED": "1"}
    out = open(log or work.with_suffix(".log"), "ab")
    proc = subprocess.Popen(serve_command(work, port, *extra), stdout=out, stderr=subprocess.STDOUT, env=env)

    def listening():
        if proc.poll() is not None:
            raise AssertionError(f"a3d serve exited with {proc.returncode}: {Path(out.name).read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, 60, what="a3d serve to listen")
    return proc


def series_state(work: Path) -> dict[str, dict]:
    return {r["series_uid"]: r for r in Queue(work).series_rows()}


def run_in_thread(node) -> threading.Thread:
    ready = threading.Event()
    t = threading.Thread(target=node.run, kwargs={"ready": ready}, daemon=True)
    t.start()
    assert ready.wait(30), "node did not start"
    return t


def frame_uids(ds) -> set[str]:
    """The SOP Instance UIDs a SEG references (per-frame derivation sources)."""
    out = set()
    for f in ds.PerFrameFunctionalGroupsSequence:
        for d in f.DerivationImageSequence:
            out |= {s.ReferencedSOPInstanceUID for s in d.SourceImageSequence}
    return out


class Orthanc:
    """A real PACS for the end-to-end tests: Debian's Orthanc (with its DICOMweb plugin) on free
    loopback ports, its database in ``folder``; ``modalities``: name -> (AE, port) on 127.0.0.1."""

    BINARY = "/usr/sbin/Orthanc"
    DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

    def __init__(self, folder: Path, modalities: dict[str, tuple[str, int]], aet: str = "ORTHANC"):
        if shutil.which("Orthanc") is None and not Path(self.BINARY).exists():
            if os.environ.get("CI") == "true":
                pytest.fail("Orthanc is missing: .ci/run installs Debian's orthanc and orthanc-dicomweb")
            pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
        self.folder, self.aet = folder, aet
        self.http, self.dicom = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = {"Name": "a3d-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
                  "HttpPort": self.http, "DicomPort": self.dicom, "DicomAet": aet, "RemoteAccessAllowed": False,
                  "AuthenticationEnabled": False, "Plugins": [self.DICOMWEB],
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "HttpTimeout": 120, "DicomScuTimeout": 30,
                  "DicomModalities": {k: [ae, "127.0.0.1", port] for k, (ae, port) in modalities.items()}}
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom}"

    def start(self) -> "Orthanc":
        log = open(self.folder / "orthanc.log", "ab")
        self.proc = subprocess.Popen([self.BINARY if Path(self.BINARY).exists() else "Orthanc",
                                      str(self.folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-1500:]}")
            try:
                return requests.get(self.url + "/system", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, 30, what="Orthanc to start")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def upload(self, files: list[Path]) -> str:
        """POST the files to /instances; returns the Orthanc id of their series."""
        ids = [requests.post(self.url + "/instances", data=f.read_bytes(), timeout=30).json() for f in files]
        return ids[0]["ParentSeries"]

    def route(self, series_id: str, modality: str = "a3d", **options):
        """Orthanc's store to a modality (what a routing rule or a user's "Send to" does), synchronously."""
        body = {"Resources": [series_id], "Synchronous": True, **options}
        return requests.post(f"{self.url}/modalities/{modality}/store", json=body, timeout=120)

    def study_series(self, study_uid: str) -> list[dict]:
        """MainDicomTags of every series of the study with this Study Instance UID (plus its instance ids)."""
        found = requests.post(self.url + "/tools/lookup", data=study_uid, timeout=10).json()
        studies = [f["ID"] for f in found if f["Type"] == "Study"]
        if not studies:
            return []
        series = requests.get(f"{self.url}/studies/{studies[0]}/series", timeout=10).json()
        return [{**s["MainDicomTags"], "Instances": s["Instances"]} for s in series]

    def instance(self, instance_id: str) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(requests.get(f"{self.url}/instances/{instance_id}/file", timeout=30).content))
