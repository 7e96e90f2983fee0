"""The node's Storage SCP (pynetdicom): CT Image, Enhanced CT and Legacy Converted Enhanced CT
Storage in every transfer syntax ``a3d predict`` decodes, and Verification (C-ECHO).

Other storage SOP classes are accepted at association time only to answer each of their instances
with a refusal status (0x0122, SOP class not supported) and count it in the association's log line:
a PACS that routes a whole study then sees, per instance, why a3d did not keep it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from a3d.data.scans.dicom_pixels import CT_SOP_CLASSES, TRANSFER_SYNTAXES
from a3d.serve.store import SUCCESS, InstanceStore

log = logging.getLogger("a3d.serve")


@dataclass
class _Tally:
    peer: str
    stored: int = 0
    refused: Counter = field(default_factory=Counter)
    named: set = field(default_factory=set)  # (series, reason) already logged


def tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """The server side of DICOM TLS: this node's certificate chain and private key (PEM)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def storage_ae(ae_title: str, allow_ae: tuple[str, ...] = ()) -> AE:
    """The acceptor: CT classes in the decodable transfer syntaxes, other storage classes to refuse,
    Verification; ``allow_ae``: the calling AE titles accepted (empty: any)."""
    ae = AE(ae_title=ae_title)
    for uid in CT_SOP_CLASSES:
        ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax not in CT_SOP_CLASSES:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(allow_ae)
    ae.maximum_associations = 16  # a PACS may route several studies at once
    return ae


class StorageSCP:
    """Receives into ``store``; ``start()`` listens on ``(host, port)`` in background threads, one per
    association; ``stop()`` closes the port (associations in progress are ended)."""

    def __init__(self, store: InstanceStore, ae_title: str, host: str, port: int, allow_ae: tuple[str, ...] = (),
                 ssl_context: ssl.SSLContext | None = None):
        self.store, self.address, self.ssl_context = store, (host, port), ssl_context
        self.ae = storage_ae(ae_title, allow_ae)
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> None:
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_RELEASED, self._on_end),
                    (evt.EVT_ABORTED, self._on_end)]
        self._server = self.ae.start_server(self.address, block=False, evt_handlers=handlers,
                                            ssl_context=self.ssl_context)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # --- event handlers: each runs in its association's thread ------------------------------------

    @staticmethod
    def _peer(assoc) -> str:
        r = assoc.requestor
        return f"{r.ae_title}@{r.address}:{r.port}"

    def _on_accepted(self, event) -> None:
        with self._lock:
            self._tallies[id(event.assoc)] = _Tally(self._peer(event.assoc))

    def _on_rejected(self, event) -> None:
        log.warning("association from %s rejected (calling AE title not in --allow-ae)", self._peer(event.assoc))

    def _on_end(self, event) -> None:
        with self._lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally is None:
            return
        how = "released" if event.event is evt.EVT_RELEASED else "aborted"
        refused = ", ".join(f"{n} x {why}" for why, n in tally.refused.items())
        line = f"association from {tally.peer} {how}: {tally.stored} instances stored"
        log.info(line + (f", {sum(tally.refused.values())} refused ({refused})" if refused else ""))

    def _on_store(self, event) -> int:
        try:
            outcome = self.store.keep(event.dataset, event.encoded_dataset())
        except Exception as e:  # an unreadable dataset: never answer success for what was not kept
            log.error("C-STORE from %s: cannot read the dataset (%s)", self._peer(event.assoc), type(e).__name__)
            outcome = None
        reason = "unreadable dataset" if outcome is None else "" if outcome.status == SUCCESS else outcome.reason
        with self._lock:
            tally = self._tallies.get(id(event.assoc))
            if tally is not None and not reason:
                tally.stored += 1
            elif tally is not None:
                tally.refused[reason] += 1
                series = self._series(event)
                if (series, reason) not in tally.named:  # each refused series named once per association
                    tally.named.add((series, reason))
                    log.warning("C-STORE from %s: instances of series %s refused: %s", tally.peer, series, reason)
        return outcome.status if outcome is not None else 0xC000

    @staticmethod
    def _series(event) -> str:
        try:
            return str(event.dataset.get("SeriesInstanceUID", "") or "(no Series Instance UID)")
        except Exception:
            return "(unreadable)"
