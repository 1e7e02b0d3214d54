"""Triton Inference Server backend: frames go to a server, probabilities come back.

Uses Triton's own HTTP client (``tritonclient[http]``, imported lazily: ``pip install
'edgecrack[triton]'``). The local artifact (run folder or ``model.onnx``) supplies the input
contract and labels; the server must serve a model written from that same ONNX file by
:func:`edgecrack.export.triton.write_triton_repository`, which the backend proves by comparing
the ONNX sha256 recorded in the served ``config.pbtxt`` with the local file.

Which served model is used:

- a URL naming it: ``http://host:8000/v2/models/edgecrack_trt_fp16`` (optionally
  ``/versions/1``), or ``model_name=``;
- otherwise the best ready variant of this ONNX model on the server (TensorRT, then ONNX
  Runtime, then the python backend).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import ArtifactError, BackendUnavailable, ConfigError
from ..io import sha256_file
from ..manifest import Manifest
from .base import Backend

DEFAULT_URL = "http://127.0.0.1:8000"

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/(\d+))?/?$")
# Mirrors edgecrack.export.triton (not imported: that module is on the export side).
_PARAM_SHA = "edgecrack.onnx_sha256"
_PARAM_VARIANT = "edgecrack.variant"
_PARAM_PRECISION = "edgecrack.precision"
_VARIANT_ORDER = ("tensorrt", "onnxruntime", "python")


def parse_triton_url(url: str | None) -> tuple[str, bool, str | None, str]:
    """Split a Triton URL into (host:port, ssl, model name or None, model version or "").

    Accepts ``host:port``, ``http(s)://host:port`` and
    ``http(s)://host:port/v2/models/NAME[/versions/N]``.

    Raises:
        ConfigError: Not a URL this backend understands.
    """
    raw = (url or DEFAULT_URL).strip()
    parts = urlsplit(raw if "://" in raw else f"http://{raw}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not a Triton HTTP URL: {raw!r}", "use e.g. --url http://127.0.0.1:8000 (Triton's HTTP port)")
    if parts.query or parts.fragment:
        raise ConfigError(f"Triton URL {raw!r} has a query or fragment", "use http://HOST:PORT[/v2/models/NAME]")
    name, version = None, ""
    if parts.path not in ("", "/"):
        m = _MODEL_PATH.match(parts.path)
        if not m:
            raise ConfigError(f"Triton URL path {parts.path!r} is not /v2/models/NAME[/versions/N]",
                              "use http://HOST:PORT or http://HOST:PORT/v2/models/NAME")
        name, version = m.group(1), m.group(2) or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8000)
    except ValueError:
        raise ConfigError(f"Triton URL {raw!r} has an invalid port", "use e.g. http://127.0.0.1:8000") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https", name, version


def _params(config: dict) -> dict[str, str]:
    return {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


class TritonBackend(Backend):
    """Runs an edgecrack model served by Triton Inference Server (HTTP/REST, binary tensors).

    Args:
        artifact: The local ``model.onnx`` the served model was written from (its manifest
            gives the contract; its sha256 identifies the served model).
        manifest: Its manifest.
        url: Triton HTTP endpoint, optionally naming the model (see module docs).
        model_name: Served model to use (overrides the URL's).
        model_version: Served version ("" = the server's latest).
        timeout_s: Connection and network timeout.
    """

    name = "triton"

    def __init__(self, artifact: str | Path, manifest: Manifest, url: str | None = None, model_name: str | None = None,
                 model_version: str = "", timeout_s: float = 30.0):
        super().__init__(artifact, manifest)
        self.url = url or DEFAULT_URL
        self.endpoint, self.ssl, url_model, url_version = parse_triton_url(self.url)
        self.model_name = model_name or url_model
        self.model_version = str(model_version or url_version)
        self.timeout_s = timeout_s
        self.served: dict[str, Any] = {}
        self._client = None
        self._max_batch = 0
        self._server_version = "?"

    @staticmethod
    def probe() -> str | None:
        """None when Triton's client library is installed, else the reason."""
        try:
            import tritonclient.http  # noqa: F401
        except ImportError as e:
            return f"Triton's client library is not installed ({e}; pip install 'edgecrack[triton]')"
        return None

    # -- lifecycle -------------------------------------------------------------------
    def _load(self) -> None:
        why = self.probe()
        if why:
            raise BackendUnavailable(why, "pip install 'edgecrack[triton]'")
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.endpoint, ssl=self.ssl, connection_timeout=self.timeout_s,
                                                  network_timeout=self.timeout_s)
        try:
            try:
                live = client.is_server_live()
            except Exception as e:  # noqa: BLE001 - socket, DNS and HTTP errors all mean "no server there"
                raise BackendUnavailable(f"no Triton server answers at {self.url} ({type(e).__name__}: {e})",
                                         "start tritonserver (see docs/triton.md) or fix --url") from None
            if not live:
                raise BackendUnavailable(f"Triton server at {self.url} is not live", "check the server's log")
            self._server_version = str(client.get_server_metadata().get("version", "?"))
            name, config = self._choose_model(client)
            self._check_config(name, config)
        except BaseException:
            client.close()
            raise
        self._client = client
        self.model_name = name
        self._max_batch = int(config.get("max_batch_size", 0))
        p = _params(config)
        self.served = {"model": name, "version": self.model_version or "latest",
                       "platform": config.get("platform") or config.get("backend", "?"),
                       "variant": p.get(_PARAM_VARIANT, "?"), "precision": p.get(_PARAM_PRECISION, "?"),
                       "max_batch_size": self._max_batch}

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    # -- model discovery -------------------------------------------------------------
    def _local_sha(self) -> str | None:
        if self.artifact.suffix == ".onnx" and self.artifact.is_file():
            return sha256_file(self.artifact)
        return None

    def _config(self, client, name: str) -> dict:
        from tritonclient.utils import InferenceServerException

        try:
            return client.get_model_config(name, self.model_version)
        except InferenceServerException as e:
            raise ArtifactError(f"Triton at {self.url} cannot describe model {name!r}: {e.message()}",
                                "list the served models: curl -X POST HOST:PORT/v2/repository/index") from None

    def _choose_model(self, client) -> tuple[str, dict]:
        sha = self._local_sha()
        if self.model_name:
            if not client.is_model_ready(self.model_name, self.model_version):
                raise BackendUnavailable(f"model {self.model_name!r} (version {self.model_version or 'latest'}) is not "
                                         f"ready on the Triton server at {self.url}",
                                         "load it (tritonserver --load-model NAME) and check the server's log")
            config = self._config(client, self.model_name)
            served = _params(config).get(_PARAM_SHA)
            if sha and served and served != sha:
                raise ArtifactError(f"Triton model {self.model_name!r} was written from another ONNX model "
                                    f"(sha256 {served[:12]}..., {self.artifact.name} is {sha[:12]}...)",
                                    "export this model's repository (edgecrack export RUN --triton DIR) and reload the "
                                    "server, or pass the model.onnx it was written from")
            return self.model_name, config
        ready = [m for m in client.get_model_repository_index() if m.get("state") == "READY"]
        found: list[tuple[int, str, dict]] = []
        others: list[str] = []
        for m in ready:
            config = self._config(client, m["name"])
            p = _params(config)
            if sha and p.get(_PARAM_SHA) == sha:
                v = p.get(_PARAM_VARIANT, "")
                found.append((_VARIANT_ORDER.index(v) if v in _VARIANT_ORDER else len(_VARIANT_ORDER), m["name"], config))
            else:
                others.append(m["name"])
        if not found:
            what = f"written from {self.artifact.name} (sha256 {sha[:12]}...)" if sha else "matching this artifact"
            raise ArtifactError(f"the Triton server at {self.url} serves no ready model {what}; ready models: "
                                f"{', '.join(others) or 'none'}",
                                "export and load this model's repository (edgecrack export RUN --triton DIR), or name "
                                "the model: --url http://HOST:PORT/v2/models/NAME")
        _, name, config = min(found, key=lambda t: (t[0], t[1]))
        return name, config

    def _check_config(self, name: str, config: dict) -> None:
        m = self.manifest
        c = m.input
        ins, outs = config.get("input") or [], config.get("output") or []
        problems = []
        inp = next((i for i in ins if i.get("name") == m.input_name), None)
        out = next((o for o in outs if o.get("name") == m.output_name), None)
        if inp is None:
            problems.append(f"no input {m.input_name!r} (has {[i.get('name') for i in ins]})")
        else:
            if inp.get("data_type") != "TYPE_UINT8":
                problems.append(f"input dtype {inp.get('data_type')} (want TYPE_UINT8)")
            if [int(d) for d in inp.get("dims", [])] != [c.height, c.width, 3]:
                problems.append(f"input dims {inp.get('dims')} (want [{c.height}, {c.width}, 3])")
        if out is None:
            problems.append(f"no output {m.output_name!r} (has {[o.get('name') for o in outs]})")
        else:
            if out.get("data_type") != "TYPE_FP32":
                problems.append(f"output dtype {out.get('data_type')} (want TYPE_FP32)")
            if [int(d) for d in out.get("dims", [])] != [len(m.labels)]:
                problems.append(f"output dims {out.get('dims')} (want [{len(m.labels)}])")
        if int(config.get("max_batch_size", 0)) < 1:
            problems.append("max_batch_size is 0 (edgecrack models take a batch dimension)")
        labels = _params(config).get("edgecrack.labels")
        if labels and json.loads(labels) != m.labels:
            problems.append(f"labels {labels} (the artifact has {m.labels})")
        if problems:
            raise ArtifactError(f"Triton model {name!r} at {self.url} does not match {self.artifact.name}: "
                                + "; ".join(problems), "re-export the repository with edgecrack export RUN --triton DIR")

    # -- inference -------------------------------------------------------------------
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        m = self.manifest
        x = feeds[m.input_name]
        parts = []
        # Larger batches than the server's max_batch_size are split: Triton rejects them whole.
        for i in range(0, x.shape[0], self._max_batch):
            chunk = x[i:i + self._max_batch]
            inp = httpclient.InferInput(m.input_name, list(chunk.shape), "UINT8")
            inp.set_data_from_numpy(chunk, binary_data=True)
            want = httpclient.InferRequestedOutput(m.output_name, binary_data=True)
            try:
                res = self._client.infer(self.model_name, [inp], model_version=self.model_version, outputs=[want])
            except InferenceServerException as e:
                raise BackendUnavailable(f"Triton at {self.url} failed on {self.model_name!r}: {e.message()}",
                                         "check the server's log") from None
            except Exception as e:  # noqa: BLE001 - connection reset / timeout mid-run
                raise BackendUnavailable(f"lost the Triton server at {self.url} ({type(e).__name__}: {e})",
                                         "check that the server is running and reachable") from None
            parts.append(res.as_numpy(m.output_name).astype(np.float32, copy=False))
        return {m.output_name: np.concatenate(parts)}

    def _info(self) -> dict[str, Any]:
        try:
            from importlib.metadata import version

            lib = f"tritonclient {version('tritonclient')}"
        except Exception:  # noqa: BLE001 - metadata missing in odd installs
            lib = "tritonclient"
        return {
            "library": f"{lib}; Triton server {self._server_version}",
            "device": f"triton {self.endpoint}",
            "precision": self.served.get("precision", "?"),
            "providers": [f"{self.served.get('model', self.model_name)} ({self.served.get('platform', '?')})"],
            "threads": None,
            "served": dict(self.served),
        }
