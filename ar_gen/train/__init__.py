"""One trainer for every model of ar-gen: tokenizers now, AR generators later (see `task.py`)."""
