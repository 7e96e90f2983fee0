"""``a3d serve`` parts, with pynetdicom on both ends (the Orthanc end-to-end tests are in
test_serve_orthanc.py): the queue's states, a C-STORE answered only once the instance is kept,
refusals, TLS, late instances, failed series, send retries, SIGTERM, --keep-days, the CLI."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pydicom
import pytest

from a3d.cli import main
from a3d.predict.results import PredictSettings
from a3d.serve import store as store_module
from a3d.serve.jobs import JobRunner, result_series
from a3d.serve.node import Node, NodeConfig
from a3d.serve.queue import Queue
from a3d.serve.scp import StorageSCP
from a3d.serve.send import parse_send_to, retry_delay
from a3d.serve.store import InstanceStore
from dicom_fixtures import enhanced_ct
from predict_runner import CFG, SlowBlobDetector
from serve_support import FakePacs, c_store, free_port, lesion_series, run_in_thread, series_state, start_node, wait_for

STUDY = "1.2.826.0.1.3680043.8.498.1902"


# --- the queue -------------------------------------------------------------------------------------

def test_queue_life_of_a_series(tmp_path):
    q = Queue(tmp_path)
    assert q.add_instance("1.2", "1.2.3", "1.2.3.1", "a", now=100.0)
    assert q.add_instance("1.2", "1.2.3", "1.2.3.2", "b", now=104.0)
    assert not q.add_instance("1.2", "1.2.3", "1.2.3.2", "b", now=105.0)  # the same instance again
    assert q.promote_stable(10, now=114.0) == []  # 9 s since the last instance
    [job] = q.promote_stable(10, now=115.0)
    assert (job.job, series_state(tmp_path)["1.2.3"]["instances"]) == (1, 2)
    assert q.take_job(now=116.0) == job and q.take_job() is None
    assert Queue(tmp_path).recover() == 1  # a restart: the running job is queued again, same number
    job = q.take_job(now=117.0)
    assert job.job == 1
    assert q.finish_job(job, 3, 1, ["A@h:1", "B@h:2"], now=120.0)
    sends = {s.destination: s for s in q.due_sends(now=120.0)}
    q.send_done(sends["A@h:1"], now=121.0)
    q.send_failed(sends["B@h:2"], "refused", retry_at=130.0, now=121.0)
    assert series_state(tmp_path)["1.2.3"]["state"] == "sending"
    assert q.due_sends(now=129.0) == []
    [again] = q.due_sends(now=130.0)
    q.send_failed(again, "refused again", retry_at=None, now=131.0)
    row = series_state(tmp_path)["1.2.3"]
    assert row["state"] == "failed" and row["error"] == "send to B@h:2 failed after 2 attempts: refused again"


def test_late_instance_supersedes_the_running_job(tmp_path):
    q = Queue(tmp_path)
    q.add_instance("1.2", "1.2.3", "1.2.3.1", "a", now=0.0)
    q.promote_stable(1, now=5.0)
    job = q.take_job(now=5.0)
    q.add_instance("1.2", "1.2.3", "1.2.3.9", "z", now=6.0)  # arrives while job 1 runs
    assert not q.finish_job(job, 1, 1, ["A@h:1"], now=7.0)  # its results are not sent
    assert q.due_sends(now=8.0) == []
    [job2] = q.promote_stable(1, now=8.0)
    assert job2.job == 2 and series_state(tmp_path)["1.2.3"]["instances"] == 2


def test_retry_delay_doubles_up_to_the_cap():
    assert [retry_delay(n, 10, 300) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


@pytest.mark.parametrize("text", ["PACS@host", "PACS:104", "WAYTOOLONGAETITLE1@h:104", "P@h:0", "P@h:70000"])
def test_bad_send_to_is_one_line_error(text, capsys, tmp_path):
    assert main(["serve", "--checkpoint", "c.pt", "--work-dir", str(tmp_path), "--send-to", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--send-to {text!r}: expected AE@host:port" in err


def test_result_series_are_stable_per_source_series():
    a, b = result_series("1.2.3", 1), result_series("1.2.3", 2)
    assert (a.seg_uid, a.sr_uid) == (b.seg_uid, b.sr_uid) and a.seg_uid != a.sr_uid
    assert result_series("1.2.4", 1).seg_uid != a.seg_uid and b.instance_number == 2


# --- receiving -------------------------------------------------------------------------------------

@pytest.fixture()
def scp(tmp_path):
    q = Queue(tmp_path / "work")
    server = StorageSCP(InstanceStore(tmp_path / "work", q), "A3D", "127.0.0.1", free_port(), allow_ae=("PACS",))
    server.start()
    yield server, q
    server.stop()


def test_store_success_means_on_disk_byte_for_byte(scp, tmp_path):
    server, q = scp
    files = lesion_series(tmp_path / "s", STUDY, STUDY + ".1", slices=3)
    assert c_store(files, server.port) == [0, 0, 0]
    for f in files:
        ds = pydicom.dcmread(f)
        kept = server.store.series_dir(STUDY, STUDY + ".1") / f"{ds.SOPInstanceUID}.dcm"
        assert pydicom.dcmread(kept).PixelData == ds.PixelData
    assert sorted(q.instance_paths(STUDY + ".1")) == sorted(str(p) for p in server.store.series_dir(STUDY, STUDY + ".1").glob("*.dcm"))


def test_store_that_cannot_be_kept_fails(scp, tmp_path, monkeypatch):
    server, q = scp
    files = lesion_series(tmp_path / "s", STUDY, STUDY + ".2", slices=2)

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "write_bytes_durable", full_disk)
    assert c_store(files, server.port) == [0xA700, 0xA700]
    assert STUDY + ".2" not in series_state(tmp_path / "work")
    monkeypatch.undo()

    def locked(*a, **k):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(q, "add_instance", locked)
    assert c_store(files[:1], server.port) == [0xA700]


def test_refusals_and_allowed_callers(scp, tmp_path, caplog):
    server, _ = scp
    mr = lesion_series(tmp_path / "mr", STUDY, STUDY + ".3", slices=1, modality="MR")
    ds = pydicom.dcmread(mr[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.save_as(tmp_path / "mr.dcm")
    with caplog.at_level(logging.INFO, logger="a3d.serve"):
        assert c_store([tmp_path / "mr.dcm", mr[0]], server.port) == [0x0122, 0xA900]
        assert c_store(mr, server.port, calling="OTHER") == [None]
        wait_for(lambda: "rejected" in caplog.text and "refused" in caplog.text, 10, what="log lines")
    assert "2 refused (1 x MR Image Storage: not a CT image, 1 x Modality MR: not CT)" in caplog.text
    assert "association from OTHER@127.0.0.1" in caplog.text and "Test^Phantom" not in caplog.text
    assert f"instances of series {STUDY}.3 refused: MR Image Storage: not a CT image" in caplog.text
    assert not server.store.root.exists() or not any(server.store.root.rglob("*.dcm"))


def test_tls(tmp_path):
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    from a3d.serve.scp import tls_context

    server = StorageSCP(InstanceStore(tmp_path / "w", Queue(tmp_path / "w")), "A3D", "127.0.0.1", free_port(),
                        ssl_context=tls_context(cert, key))
    server.start()
    try:
        files = lesion_series(tmp_path / "s", STUDY, STUDY + ".4", slices=1)
        client = ssl.create_default_context(cafile=str(cert))
        assert c_store(files, server.port, tls_args=(client, "localhost")) == [0]
        assert c_store(files, server.port) == [None]  # no TLS: no association
    finally:
        server.stop()


# --- the node in-process: jobs and sends -----------------------------------------------------------

@contextlib.contextmanager
def running_node(work: Path, pacs: FakePacs | None, **kw) -> Iterator[Node]:
    """The node with the blob stand-in, in a thread, sending to ``pacs``; stopped (and ``pacs`` closed) after."""
    dest = (parse_send_to(pacs.destination),) if pacs else ()
    config = NodeConfig(work, port=free_port(), destinations=dest, stable_s=0.5, poll_s=0.1, retry_s=0.2, **kw)
    node = Node(config, JobRunner(work, SlowBlobDetector(0), CFG, PredictSettings(batch_size=1), "standin.pt"))
    thread = run_in_thread(node)
    try:
        yield node
    finally:
        node.stop_event.set()
        thread.join(30)
        if pacs is not None:
            pacs.down()


def test_late_instance_replaces_results_in_the_same_series(tmp_path):
    pacs = FakePacs().up()
    with running_node(tmp_path / "work", pacs) as node:
        files = lesion_series(tmp_path / "s", STUDY, STUDY + ".5", slices=10)
        assert c_store(files[:-1], node.scp.port) == [0] * 9
        wait_for(lambda: len(pacs.received) == 2, 60, what="the first results")
        first = {ds.Modality: ds for ds in pacs.received.values()}
        assert c_store(files[-1:], node.scp.port) == [0]
        wait_for(lambda: len(pacs.received) == 4, 60, what="the second results")
        second = {ds.Modality: ds for uid, ds in pacs.received.items() if uid not in
                  {d.SOPInstanceUID for d in first.values()}}
        for m in ("SEG", "SR"):
            assert second[m].SeriesInstanceUID == first[m].SeriesInstanceUID
            assert (first[m].InstanceNumber, second[m].InstanceNumber) == (1, 2)
        row = wait_for(lambda: series_state(tmp_path / "work")[STUDY + ".5"]["state"] == "done"
                       and series_state(tmp_path / "work")[STUDY + ".5"], 10, what="done")
        assert (row["job"], row["instances"]) == (2, 10)


def test_unprocessable_series_fails_alone_and_unreachable_destination_fails_the_job(tmp_path):
    pacs = FakePacs()  # never up
    with running_node(tmp_path / "work", pacs, send_attempts=2) as node:
        holed = lesion_series(tmp_path / "h", STUDY, STUDY + ".6", slices=10)
        del holed[4]
        good = lesion_series(tmp_path / "g", STUDY, STUDY + ".7", slices=10)
        assert c_store(holed + good, node.scp.port) == [0] * 19
        state = lambda: series_state(tmp_path / "work")  # noqa: E731
        wait_for(lambda: {state().get(u, {}).get("state") for u in (STUDY + ".6", STUDY + ".7")} == {"failed"}, 60,
                 what="both series to fail")
        assert "missing" in state()[STUDY + ".6"]["error"] and "--allow-missing" in state()[STUDY + ".6"]["error"]
        err = state()[STUDY + ".7"]["error"]
        assert err.startswith(f"send to {pacs.destination} failed after 2 attempts: association to")


def test_multiframe_enhanced_ct(tmp_path):
    pacs = FakePacs().up()
    with running_node(tmp_path / "work", pacs) as node:
        single = lesion_series(tmp_path / "s", STUDY, STUDY + ".8", slices=8)
        mf = enhanced_ct(single, tmp_path / "enhanced.dcm")
        assert c_store([mf], node.scp.port) == [0]
        wait_for(lambda: len(pacs.received) == 2, 60, what="results")
        seg = next(ds for ds in pacs.received.values() if ds.Modality == "SEG")
        refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
                for f in seg.PerFrameFunctionalGroupsSequence}
        assert refs == {3, 4, 5, 6, 7, 8}  # the lesion's slices 2..7 are frames 3..8


def test_keep_days_removes_files_of_ended_jobs(tmp_path):
    with running_node(tmp_path / "work", None, keep_days=0.0, purge_every_s=0.2) as node:
        files = lesion_series(tmp_path / "s", STUDY, STUDY + ".9", slices=6)
        assert c_store(files, node.scp.port) == [0] * 6
        wait_for(lambda: series_state(tmp_path / "work").get(STUDY + ".9", {}).get("purged") == 1, 60, what="the purge")
        assert not (tmp_path / "work" / "received" / STUDY / (STUDY + ".9")).exists()
        assert not (tmp_path / "work" / "results" / (STUDY + ".9")).exists()


def test_sigterm_requeues_the_running_job_and_status(tmp_path):
    work, port = tmp_path / "work", free_port()
    node = start_node(work, port, "--stable-seconds", "0.5", forward_s=0.5)
    files = lesion_series(tmp_path / "s", STUDY, STUDY + ".10", slices=10)
    assert c_store(files, port) == [0] * 10
    wait_for(lambda: series_state(work).get(STUDY + ".10", {}).get("state") == "running", 60, what="the job to run")
    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0
    assert series_state(work)[STUDY + ".10"]["state"] == "queued"
    assert main(["serve", "status", "--work-dir", str(work), "--json"]) == 0
    node = start_node(work, port)
    wait_for(lambda: series_state(work)[STUDY + ".10"]["state"] == "done", 60, what="the job after the restart")
    node.terminate()
    assert node.wait(30) == 0
    assert json.loads((work / "results" / (STUDY + ".10") / "predictions.json").read_text())["candidates"]
