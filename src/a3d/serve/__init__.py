"""``a3d serve``: a3d as a DICOM node. A PACS routes CT series to it (C-STORE); each complete
series becomes a job on the loaded model; the DICOM SEG and SR go back by C-STORE and/or STOW-RS.

- :mod:`~a3d.serve.queue`: the persistent queue (SQLite) and the states of a series;
- :mod:`~a3d.serve.store`: a received instance on disk before its C-STORE succeeds;
- :mod:`~a3d.serve.scp`: the Storage SCP (pynetdicom);
- :mod:`~a3d.serve.jobs`: one job, ``a3d predict --dicom`` on a received series;
- :mod:`~a3d.serve.send`: C-STORE SCU and STOW-RS, the backoff;
- :mod:`~a3d.serve.node`: the threads that tie them together;
- :mod:`~a3d.serve.status`: ``a3d serve status``.

See docs/serve.md.
"""
