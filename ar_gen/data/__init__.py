"""Data: dataset sources (`tfds:`, `folder:`, `bundled:`), preprocessing ops and grain pipelines."""
