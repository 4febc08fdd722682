"""TensorFlow Datasets as the last resort: prepared data is used as is; a download is tried only if the host answers.

Measured here (offline, DNS failing at once): a plain tfds.load download attempt took 204 s to fail, because the
downloader retries each URL with back-off. So before any download we open one TCP connection to the download
host (or the HTTPS proxy) with a NETWORK_CHECK_SECONDS limit, in a daemon thread so a hanging DNS lookup is
bounded too. KPRETRAIN_OFFLINE=1 skips downloads altogether.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

OFFLINE_ENV = "KPRETRAIN_OFFLINE"
NETWORK_CHECK_SECONDS = 3.0


class TfdsUnavailable(Exception):
    """TFDS cannot provide the data set; the message says why in a few words."""


GENERIC_DOWNLOAD_URL = "https://storage.googleapis.com/"  # probed for data sets kpretrain has no URL for


def tfds_data_dir(override: str | None = None) -> Path:
    """The folder TFDS reads prepared data sets from: `data.data_dir`, else as TFDS: $TFDS_DATA_DIR or
    ~/tensorflow_datasets."""
    return Path(override or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def tfds_knows(name: str) -> bool:
    """Whether TFDS has a data set builder of this name (its registry; no download)."""
    import tensorflow_datasets as tfds

    return name.split(":")[0].split("/")[0] in tfds.list_builders(with_community_datasets=False)


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _probe_address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)


def network_problem(url: str, timeout: float = NETWORK_CHECK_SECONDS) -> str | None:
    """None if the host of url (or its proxy) accepts a TCP connection within timeout seconds, else the reason."""
    host, port = _probe_address(url)
    outcome: dict[str, str] = {}

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = ""
        except OSError as err:
            outcome["error"] = " ".join(str(err).split()) or type(err).__name__

    thread = threading.Thread(target=probe, name="kpretrain-network-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if "ok" in outcome:
        return None
    return f"{host}:{port} unreachable ({outcome.get('error', f'no answer in {timeout:g} s')})"


def _builder(tfds_name: str, data_dir: str | None = None):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(tfds_name, data_dir=str(tfds_data_dir(data_dir)))
    except Exception as err:  # TFDS raises many kinds of errors (missing extras, registry, file system)
        raise TfdsUnavailable(f"TFDS error: {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None


def tfds_status(tfds_name: str, download_url: str, data_dir: str | None = None) -> tuple[bool, str]:
    """(available, detail) without loading: prepared, or downloadable (host answers), or why not."""
    where = tfds_data_dir(data_dir) / tfds_name
    try:  # no folder means not prepared: skip importing TFDS (and its "no dataset_info.json" warning)
        if where.is_dir() and _builder(tfds_name, data_dir).is_prepared():
            return True, f"tfds:{tfds_name} ({where})"
    except TfdsUnavailable as err:
        return False, f"TFDS {where} ({err})"
    if offline():
        return False, f"TFDS {where} (not prepared; download skipped: {OFFLINE_ENV}=1)"
    problem = network_problem(download_url)
    if problem:
        return False, f"TFDS {where} (not prepared; download not tried: {problem})"
    return True, f"tfds:{tfds_name} (download to {where})"


def load_tfds_arrays(tfds_name: str, download_url: str, data_dir: str | None = None,
                     split: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], str]:
    """Read (x_train, y_train, x_test, y_test, class_names, source) from TFDS, downloading only if the host answers.
    `split` maps train/test to the data set's own split names (e.g. {test: validation})."""
    available, detail = tfds_status(tfds_name, download_url, data_dir)
    if not available:
        raise TfdsUnavailable(detail)
    import tensorflow_datasets as tfds

    names = {"train": "train", "test": "test", **(split or {})}
    builder = _builder(tfds_name, data_dir)
    try:
        if not builder.is_prepared():
            builder.download_and_prepare()
        missing = [s for s in (names["train"], names["test"]) if s.split("[")[0] not in builder.info.splits]
        if missing:
            raise TfdsUnavailable(f"TFDS {tfds_name} has no split {missing[0]!r} (it has {', '.join(builder.info.splits)}); "
                                  f"set data.split, e.g. {{test: {next(iter(builder.info.splits))}}}")
        splits = builder.as_dataset(split=[names["train"], names["test"]], as_supervised=True, batch_size=-1)
        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(splits)
        class_names = list(builder.info.features["label"].names)
    except TfdsUnavailable:
        raise
    except Exception as err:  # download, extraction and reading errors all end here
        raise TfdsUnavailable(f"TFDS {tfds_data_dir(data_dir) / tfds_name} (download or read failed: {type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    return x_train, y_train, x_test, y_test, class_names, detail.replace("download to ", "downloaded to ")
