"""A local Google Cloud Storage server (`gcp-storage-emulator`, in memory) that ar-gen reaches through the same
code as a real bucket: `gs://` URLs through etils.epath + gcsfs, and Orbax's arrays through TensorStore's GCS
driver, both pointed at the server by their documented environment variables."""

import contextlib
import logging
import socket

BUCKET = "ar-gen-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def fake_bucket(monkeypatch):
  """Yields `gs://BUCKET`, served locally for the duration."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  port = _free_port()
  server = create_server("localhost", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  url = f"http://localhost:{port}"
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)  # gcsfs
  monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", url)  # TensorStore (Orbax's array files)
  monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "test")  # TensorStore: no credential lookup
  monkeypatch.setenv("EPATH_USE_TF", "0")
  for name in ("gcsfs", "gcp_storage_emulator", "google.auth"):
    logging.getLogger(name).setLevel(logging.ERROR)
  import fsspec  # pylint: disable=g-import-not-at-top
  fsspec.filesystem("gs").clear_instance_cache()
  try:
    yield f"gs://{BUCKET}"
  finally:
    server.stop()
