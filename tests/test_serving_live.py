"""Live test: a tiny export served by a real `tensorflow_model_server`, over REST.

Runs where TF Serving's binary is on PATH (inside the tensorflow/serving
image, or with Debian's tensorflow-model-server package from TF Serving's apt
repository); skips elsewhere. The server listens on free ports and is asked
on 127.0.0.1 only; every wait is bounded, and the server is always stopped.
"""

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.test_saved_model import (
    INFO,
    INPUTS,
    SIGNATURE_INPUTS,
    assert_outputs_match,
    build,
    case_config,
    expected_outputs,
)
from tests.test_table_signatures import COLUMN_TYPES, ROWS, as_cells, mixed_frame
from tfvae import noise, saved_model, signatures, table_model, tables

MODEL_NAME = "tiny"
STARTUP_SECONDS = 60
REQUEST_SECONDS = 30
# Signatures with one batch-major input, which the row format can carry.
ROW_SIGNATURES = ("serving_default", "encode", "decode", "score", "reconstruct")
COLUMN_SIGNATURES = tuple(s for s in SIGNATURE_INPUTS if s != "metadata")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None) -> tuple[int, dict]:
    """Returns (HTTP status, decoded JSON) of a GET, or of a POST of `body`."""
    payload = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=payload, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _wait_until_available(url: str, server: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tensorflow_model_server exited:\n{log_path.read_text()}")
        try:
            _, status = _request(url)
        except (urllib.error.URLError, ConnectionError):
            status = {}
        states = [v["state"] for v in status.get("model_version_status", [])]
        if "AVAILABLE" in states:
            return
        time.sleep(0.5)
    pytest.fail(
        f"{url} was not AVAILABLE after {STARTUP_SECONDS} s:\n{log_path.read_text()}"
    )


def _server_binary() -> str:
    """Returns the path of tensorflow_model_server, or skips the test."""
    server_binary = shutil.which("tensorflow_model_server")
    if server_binary is None:
        pytest.skip(
            "tensorflow_model_server is not on PATH; run inside the "
            "tensorflow/serving image or install TF Serving to run the live test."
        )
    return server_binary


@contextlib.contextmanager
def _serving(server_binary: str, base_path, log_path):
    """Serves the model base path `base_path`; yields its REST URL once available."""
    rest_port = _free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                server_binary,
                f"--port={_free_port()}",
                f"--rest_api_port={rest_port}",
                f"--model_name={MODEL_NAME}",
                f"--model_base_path={base_path}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}"
        _wait_until_available(url, server, log_path)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Yields (model URL, config, vae, server log path) of a served export."""
    server_binary = _server_binary()
    tmp_path = tmp_path_factory.mktemp("served")
    config = case_config(tmp_path, "diag-bernoulli")
    vae = build(config)
    saved_model.export(
        vae, str(tmp_path / MODEL_NAME), config=config, dataset_info=INFO
    )
    log_path = tmp_path / "server.log"
    with _serving(server_binary, tmp_path / MODEL_NAME, log_path) as url:
        yield url, config, vae, log_path


def _predict(url: str, body: dict) -> dict:
    status, response = _request(f"{url}:predict", body)
    assert status == 200, response
    return response


@pytest.mark.parametrize("signature", ROW_SIGNATURES)
def test_row_format(signature, served):
    url, config, vae, _ = served
    (name,) = SIGNATURE_INPUTS[signature]
    predictions = _predict(
        url, {"signature_name": signature, "instances": INPUTS[name].tolist()}
    )["predictions"]
    expected = expected_outputs(vae, config, signature, INPUTS)
    # One output: a list of values; several: a list of {output: value}.
    if len(expected) == 1:
        actual = {next(iter(expected)): np.array(predictions)}
    else:
        actual = {k: np.array([row[k] for row in predictions]) for k in expected}
    assert_outputs_match(actual, expected)


@pytest.mark.parametrize("signature", COLUMN_SIGNATURES)
def test_columnar_format(signature, served):
    url, config, vae, _ = served
    inputs = {name: INPUTS[name].tolist() for name in SIGNATURE_INPUTS[signature]}
    outputs = _predict(url, {"signature_name": signature, "inputs": inputs})["outputs"]
    expected = expected_outputs(vae, config, signature, INPUTS)
    # One output: its value; several: {output: value}.
    if len(expected) == 1:
        outputs = {next(iter(expected)): outputs}
    assert_outputs_match({k: np.array(v) for k, v in outputs.items()}, expected)


def test_model_metadata_lists_every_signature(served):
    url, _, _, _ = served
    status, response = _request(f"{url}/metadata")
    assert status == 200, response
    signatures = response["metadata"]["signature_def"]["signature_def"]
    assert set(signatures.SIGNATURES) <= set(signatures)


def test_metadata_signature_is_not_served_over_rest(served):
    """TF Serving's REST API rejects signatures without inputs (gRPC serves them)."""
    url, _, _, _ = served
    status, response = _request(
        f"{url}:predict", {"signature_name": "metadata", "inputs": {}}
    )
    assert status == 400
    assert "Failed to get input map for signature: metadata" in response["error"]


BAD_REQUESTS = {
    "float pixels": (
        {"signature_name": "encode", "instances": [[[[0.5]] * 8] * 8]},
        "is not of expected type: uint8",
    ),
    "small images": (
        {"signature_name": "encode", "instances": [[[[0]] * 7] * 7]},
        r"is not compatible with expected shape \[\?,8,8,1\]",
    ),
    "negative num_samples": (
        {"signature_name": "sample", "inputs": {"num_samples": -1, "seed": [1, 2]}},
        "num_samples must be a positive int32 scalar",
    ),
    "seed of 3 numbers": (
        {"signature_name": "sample", "inputs": {"num_samples": 2, "seed": [1, 2, 3]}},
        r"is not compatible with expected shape \[2\]",
    ),
}


@pytest.mark.parametrize("bad", BAD_REQUESTS)
def test_bad_requests_fail_with_a_message_naming_the_problem(bad, served):
    url, _, _, _ = served
    body, message = BAD_REQUESTS[bad]
    status, response = _request(f"{url}:predict", body)
    assert status == 400
    assert re.search(message, response["error"]), response["error"]


def test_the_server_replayed_one_warmup_request_per_signature(served):
    _, _, _, log_path = served
    found = re.search(r"Number of warmup records read: (\d+)", log_path.read_text())
    assert found, log_path.read_text()
    assert int(found.group(1)) == len(signatures.SIGNATURES)


def test_a_table_export_scores_rows_by_column_name(tmp_path):
    """TF Serving's row format, as users write it: one {column: cell} per row."""
    server_binary = _server_binary()
    schema = tables.infer_schema(mixed_frame(16), column_types=COLUMN_TYPES)
    vae = table_model.build_table_vae(schema, latent_dim=2, hidden_units=(4,))
    saved_model.export(vae, str(tmp_path / MODEL_NAME))
    # NaN and "" are missing cells; TF Serving's JSON reader takes NaN.
    instances = [
        {name: values[row].item() for name, values in ROWS.items()}
        for row in range(len(ROWS["price"]))
    ]
    for row in instances:
        row["c_2nd_weather"] = row["c_2nd_weather"].decode()
    with _serving(server_binary, tmp_path / MODEL_NAME, tmp_path / "log") as url:
        predictions = _predict(
            url, {"signature_name": "score", "instances": instances}
        )["predictions"]
        status, response = _request(
            f"{url}:predict",
            {"signature_name": "score", "instances": [{**instances[0], "wind": 1.0}]},
        )
    cells = as_cells(ROWS)
    seeds = noise.export_seeds(vae.likelihood.observe(cells, None), vae.seed)
    reconstruction, kl = vae.neg_elbo_terms(cells, seeds)
    np.testing.assert_allclose(
        [row["neg_elbo"] for row in predictions], reconstruction + kl, rtol=1e-5
    )
    assert status == 400 and "wind" in response["error"], response
