"""A local Google Cloud Storage server (`gcp-storage-emulator`, in memory) that ar-gen reaches through the same
code as a real bucket: `gs://` URLs through etils.epath + gcsfs, and Orbax's arrays through TensorStore's GCS
driver, both pointed at the server by their documented environment variables.

One gap of the emulator is filled here: its media downloads lack the `x-goog-generation` header that real GCS
sends and TensorStore reads (without it, reads of Orbax's OCDBT files failed now and then with "Malformed
StorageGeneration"); `_send_generation_headers` adds it.
"""

import contextlib
import logging
import socket
import sys

BUCKET = "ar-gen-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _send_generation_headers(monkeypatch) -> None:
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  download = objects.download

  def with_generation(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except Exception:  # pylint: disable=broad-except  # absent object: `download` answers 404
      pass
    return download(request, response, storage, *args, **kwargs)

  monkeypatch.setattr(objects, "download", with_generation)  # the JSON API's alt=media path
  handlers = tuple((route[0], {m: with_generation if h is download else h for m, h in route[1].items()},
                    *route[2:]) for route in server.HANDLERS)
  monkeypatch.setattr(server, "HANDLERS", handlers)  # the download endpoints


def _quiet_disconnects(monkeypatch) -> None:
  """A client that closes a connection early (gcsfs, TensorStore) is not an error worth a traceback in the log."""
  from http import server as http_server  # pylint: disable=g-import-not-at-top

  original = http_server.HTTPServer.handle_error

  def handle_error(self, request, client_address):
    if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
      original(self, request, client_address)

  monkeypatch.setattr(http_server.HTTPServer, "handle_error", handle_error)


@contextlib.contextmanager
def fake_bucket(monkeypatch):
  """Yields `gs://BUCKET`, served locally for the duration."""
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  _send_generation_headers(monkeypatch)
  _quiet_disconnects(monkeypatch)
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
