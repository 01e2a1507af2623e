"""A TFDS dataset's source files: what a manual dir must hold, and whether
their download hosts answer.

`tfvae.data.prepare_builder` checks one or the other before TFDS builds a
dataset: a `--manual_dir` must hold the dataset's original files
(`expected_manual_files`); without one, each download host (or proxy) must
accept a connection within `DOWNLOAD_CHECK_SECONDS`, so that a machine
without a network is told about `--manual_dir` at once, not after TFDS's
minutes of silent retries.

Example:

    check_download_hosts(tfds.builder("mnist"), "mnist")
"""

import os
import socket
import threading
import urllib.parse
import urllib.request

import tensorflow_datasets as tfds

from tfvae import errors

# How long a download's host may take to accept a connection before an
# unprepared dataset without --manual_dir is refused.
DOWNLOAD_CHECK_SECONDS = 10.0


def _downloads(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
    """Returns {file name TFDS looks for in a manual dir: its URL}."""
    return {
        info.filename or os.path.basename(url): url
        for url, info in (builder.url_infos or {}).items()
    }


def expected_manual_files(builder: tfds.core.DatasetBuilder) -> list[str]:
    """Returns the file names TFDS looks for in a manual dir for `builder`."""
    return sorted(_downloads(builder))


def check_manual_dir(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
    """Refuses a `--manual_dir` that is not a folder, is empty, or lacks a file
    TFDS needs for `builder`, listing the files it must hold.

    Args:
        builder: the TFDS builder of the dataset to build offline.
        manual_dir: `--manual_dir`.

    Raises:
        errors.UsageError: naming the folder and the files it must hold.

    Example:
        >>> check_manual_dir(tfds.builder("mnist"), "mnist_files")
    """
    expected = expected_manual_files(builder)
    listing = (
        "\nIt must hold the dataset's original downloaded files: "
        + (", ".join(expected) if expected else "see the dataset's TFDS page")
        + "."
    )
    if not os.path.isdir(manual_dir):
        raise errors.UsageError(f"--manual_dir={manual_dir} is not a folder.{listing}")
    present = set(os.listdir(manual_dir))
    if not present:
        raise errors.UsageError(f"--manual_dir={manual_dir} is empty.{listing}")
    missing = [name for name in expected if name not in present]
    if missing:
        raise errors.UsageError(
            f"--manual_dir={manual_dir} lacks {', '.join(missing)}.{listing}"
        )


def _reachable(host: str, port: int, seconds: float) -> str | None:
    """Returns why a TCP connection to `host`:`port` fails within `seconds`,
    or None if it opens. A daemon thread bounds the name lookup, which
    `socket.create_connection`'s timeout does not cover."""
    outcome = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else f"no answer within {seconds:g} s"


def check_download_hosts(builder: tfds.core.DatasetBuilder, name: str) -> None:
    """Refuses, within seconds, a download whose hosts cannot be reached.

    TFDS would retry each name lookup for minutes, silently, then raise a
    ConnectionError that does not mention --manual_dir. Checks one connection
    per host (or per proxy, if the environment sets one); a dataset with no
    download (generated, or a user's folder) needs none.

    Args:
        builder: the TFDS builder of the dataset to download.
        name: its name in messages (`--dataset`).

    Raises:
        errors.UsageError: a host that does not answer within
            `DOWNLOAD_CHECK_SECONDS`, listing the files to fetch elsewhere for
            `--manual_dir`.

    Example:
        >>> check_download_hosts(tfds.builder("mnist"), "mnist")
    """
    downloads = _downloads(builder)
    proxies = urllib.request.getproxies()
    endpoints = set()
    for url in downloads.values():
        via = urllib.parse.urlsplit(url)
        if via.scheme in proxies and not urllib.request.proxy_bypass(via.hostname):
            via = urllib.parse.urlsplit(proxies[via.scheme])
        if via.hostname:
            endpoints.add(
                (via.hostname, via.port or (443 if via.scheme == "https" else 80))
            )
    for host, port in sorted(endpoints):
        problem = _reachable(host, port, DOWNLOAD_CHECK_SECONDS)
        if problem:
            files = "\n  ".join(f"{f}, from {downloads[f]}" for f in sorted(downloads))
            raise errors.UsageError(
                f"--dataset={name} is not prepared in {builder.data_dir}, and "
                f"cannot be downloaded: no connection to {host}:{port} "
                f"({problem}). Without a network, download its files on "
                f"another machine:\n  {files}\nput them in one folder, and pass "
                "--manual_dir=FOLDER: TFDS then builds the dataset from them, "
                "offline."
            )
