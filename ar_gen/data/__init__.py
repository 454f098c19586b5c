"""Data: dataset sources (`tfds:`, `folder:`, `bundled:`, `tokens:`), preprocessing ops and grain pipelines."""
