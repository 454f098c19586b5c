"""Experiment configs: load `configs/*.py:ARGS`, apply `--config.KEY=VALUE` overrides, validate, save as JSON.

A config file defines `get_config(arg: str) -> ml_collections.ConfigDict`; `arg` is the text after the first ':'
of the spec (`configs/mnist_vq.py:runlocal,steps=10`) and is parsed with `parse_arg`. Unknown keys, in the arg
string or in an override, are errors that name the key and the nearest valid one; the one exception is the
fault-injection hooks of the tests (`FAULT_HOOKS`), which no config defines and only an override adds.
Durations given in epochs or examples become steps with `num_steps`.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib.util
import json
import os
from typing import Any, Iterable

import ml_collections

from ar_gen import fileio
from ar_gen.errors import UserError

REQUIRED_KEYS = (
    "task", "seed", "total_steps", "batch_size", "log_every_steps", "ckpt_every_steps", "keep_ckpts",
    "data.train", "data.eval", "mesh.data", "mesh.fsdp", "mesh.tensor", "optimizer", "model",
)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")  # the repo's


class ConfigError(UserError, ValueError):
  """A config file, argument or override is wrong; the message names it."""


# Fault injection for tests, read by the trainer as `(config.get("fault") or {}).get(NAME, 0)`; 0 = off. No config
# defines them: `--config.fault.sigterm_after_step=3` (or `fault.inject_nan_at_step=3` in `load_config`'s
# overrides) adds one as an int. Every other unknown key is still refused.
FAULT_HOOKS = {
    "fault.inject_nan_at_step": "the loss of this step (1-based) is NaN (tests of the non-finite guard)",
    "fault.sigterm_after_step": "the process sends itself SIGTERM after this step (tests of preemption)",
}


IMAGENET_TRAIN_EXAMPLES = 1_281_167  # images in ImageNet-1k's train split (tfds imagenet2012:train)


def num_steps(*, steps: int | None = None, epochs: float | None = None, examples: int | None = None,
              batch_size: int | None = None, dataset_size: int | None = None) -> int:
  """A training duration as optimizer steps, from exactly one of `steps`, `epochs` or `examples`.

  An epoch is `dataset_size // batch_size` whole batches (a loader that drops the last partial batch, as LlamaGen's:
  1,281,167 ImageNet images at batch 256 are 5004 steps), so `num_steps(epochs=300, batch_size=256,
  dataset_size=IMAGENET_TRAIN_EXAMPLES) == 300 * 5004`; `examples` rounds up to whole batches. The result is
  rounded down to a whole step.
  """
  given = {k: v for k, v in dict(steps=steps, epochs=epochs, examples=examples).items() if v is not None}
  if len(given) != 1:
    raise ConfigError(f"num_steps takes exactly one of steps, epochs, examples; got {sorted(given) or 'none'}")
  if steps is not None:
    return int(steps)
  if not batch_size or batch_size < 1:
    raise ConfigError(f"num_steps({next(iter(given))}=...) needs a batch_size >= 1, got {batch_size!r}")
  if examples is not None:
    return -(-int(examples) // batch_size)
  if not dataset_size or dataset_size < batch_size:
    raise ConfigError(f"num_steps(epochs=...) needs a dataset_size of at least one batch ({batch_size}), "
                      f"got {dataset_size!r}")
  return int(epochs * (dataset_size // batch_size))


def _nearest(key: str, valid: Iterable[str]) -> str:
  match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
  return f" (did you mean {match[0]!r}?)" if match else ""


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a config-file argument string `a,b=3,c=x` against `defaults`; a bare name sets a bool to True."""
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, text = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"unknown config argument {key!r}{_nearest(key, defaults)}; known: {sorted(defaults)}")
    values[key] = _parse_value(text) if sep else True
  return ml_collections.ConfigDict(values)


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """All dotted keys of a nested config, leaves and inner nodes."""
  keys = []
  for name, value in config.items():
    path = f"{prefix}{name}"
    keys.append(path)
    if isinstance(value, ml_collections.ConfigDict):
      keys.extend(flat_keys(value, path + "."))
  return keys


def _coerce(old: Any, text: str, key: str) -> Any:
  value = _parse_value(text)
  if old is None or isinstance(old, str):
    return text if isinstance(old, str) else value
  if isinstance(old, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key}={text}: expected a bool")
  if isinstance(old, float):
    try:
      return float(text)
    except ValueError:
      pass
  if isinstance(old, int) and isinstance(value, int) and not isinstance(value, bool):
    return value
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(old)(value)
  raise ConfigError(f"--config.{key}={text}: expected a value like {old!r} ({type(old).__name__})")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies `KEY=VALUE` overrides (dotted keys) in place; a key that does not exist is an error, except the
  fault-injection hooks `FAULT_HOOKS` (tests only), which are added."""
  valid = flat_keys(config)
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} must look like KEY=VALUE")
    *parents, leaf = key.split(".")
    if key not in valid:
      if key not in FAULT_HOOKS:
        raise ConfigError(f"unknown config key {key!r}{_nearest(key, [*valid, *FAULT_HOOKS])}")
      node = config
      for name in parents:  # the hook's group (`fault`) exists in every base_config; created if not
        if name not in node:
          node[name] = ml_collections.ConfigDict()
        node = node[name]
      node[leaf] = _coerce(0, text, key)  # an int step; 0 = off
      continue
    node = config
    for name in parents:
      node = node[name]
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"config key {key!r} is a group; override one of its fields")
    with node.ignore_type():
      node[leaf] = _coerce(node[leaf], text, key)
  return config


# (key, smallest allowed value) of the integer keys every training config has
MINIMUMS = (("total_steps", 1), ("batch_size", 1), ("grad_accum_steps", 1), ("log_every_steps", 1),
            ("ckpt_every_steps", 1), ("keep_ckpts", 1), ("vis_every_steps", 0), ("vis_examples", 1))


def validate(config: ml_collections.ConfigDict, source: str = "config") -> None:
  """Checks the keys that every training config must have (DESIGN.md) and their ranges, before any work starts."""
  valid = set(flat_keys(config))
  missing = [k for k in REQUIRED_KEYS if k not in valid]
  if missing:
    raise ConfigError(f"{source} lacks required keys {missing}")
  for key, minimum in MINIMUMS:
    value = config.get(key, minimum)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
      raise ConfigError(f"{source}: {key}={value!r} must be an integer >= {minimum}")
  if config.batch_size % config.get("grad_accum_steps", 1):
    raise ConfigError(f"{source}: batch_size={config.batch_size} must be a multiple of grad_accum_steps="
                      f"{config.grad_accum_steps} (the batch is split into that many equal micro-batches)")
  if not 0.0 <= config.get("ema_decay", 0.0) < 1.0:
    raise ConfigError(f"{source}: ema_decay={config.ema_decay!r} must lie in [0, 1) (0 = no EMA)")
  classes = config.model.get("num_classes")
  if classes is not None and (not isinstance(classes, int) or classes < 1):
    raise ConfigError(f"{source}: model.num_classes={classes!r} must be an integer >= 1")
  for axis in ("data", "fsdp", "tensor"):
    size = config.mesh[axis]
    if not isinstance(size, int) or size == 0 or size < -1:
      raise ConfigError(f"{source}: mesh.{axis}={size!r} must be a positive integer or -1 (all the rest)")


def leaves(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{dotted key: value} of a config's leaves, as its JSON form has them (tuples for lists)."""
  out, todo = {}, [("", json.loads(config.to_json_best_effort(sort_keys=True)))]
  while todo:
    prefix, node = todo.pop()
    for name, value in node.items():
      if isinstance(value, dict):
        todo.append((f"{prefix}{name}.", value))
      else:
        out[f"{prefix}{name}"] = _lists_to_tuples(value)
  return out


# Keys a resumed run may change without changing what it trains: how often it logs, saves and evaluates, how it
# reads data and lays out devices, sampling settings. Every other difference from a work directory's config.json
# needs `ar-gen train --allow-config-change`; `fingerprint` ignores these keys.
RUNTIME_KEYS = ("keep_ckpts", "log_every_steps", "ckpt_every_steps", "vis_every_steps", "vis_examples",
                "data.num_threads", "data.prefetch", "data.data_dir", "mesh.", "sharding.", "fault.", "evals.",
                "sample.")


def is_runtime_key(key: str) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RUNTIME_KEYS)


def fingerprint(config: ml_collections.ConfigDict) -> str:
  """A short hash of what a config trains (its leaves but the RUNTIME_KEYS): equal for a run and its resumes."""
  kept = {k: v for k, v in leaves(config).items() if not is_runtime_key(k)}
  return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differing_keys(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[tuple[str, Any, Any]]:
  """(key, value in a, value in b) of every leaf that differs (missing on one side: None), sorted by key."""
  la, lb = leaves(a), leaves(b)
  return [(k, la.get(k), lb.get(k)) for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)]


def _exec_config_file(path: str):
  """Runs a config file as a module; a syntax error or a failing import is a ConfigError naming the file."""
  module_spec = importlib.util.spec_from_file_location(f"ar_gen_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"config file {path!r}: syntax error at line {e.lineno}: {e.msg}") from e
  except OSError as e:
    raise ConfigError(f"config file {path!r} cannot be read: {e.strerror or e}") from e
  except Exception as e:  # pylint: disable=broad-except  # any error while importing the user's file
    raise ConfigError(f"config file {path!r} failed to load: {type(e).__name__}: {e}") from e
  return module


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:ARGS]`, applies overrides, validates and locks the config."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist" + (" (it is a directory)" if os.path.isdir(path) else ""))
  module = _exec_config_file(path)
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config file {path!r} defines no get_config(arg)")
  try:
    config = module.get_config(arg)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # the user's get_config failed
    raise ConfigError(f"config file {path!r}: get_config({arg!r}) raised {type(e).__name__}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"config file {path!r}: get_config must return an ml_collections.ConfigDict, got "
                      f"{type(config).__name__}")
  apply_overrides(config, overrides)
  validate(config, path)
  config.lock()
  return config


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config to `workdir/config.json` and returns the path."""
  return fileio.write_text(fileio.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True))


def load_workdir_config(workdir: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Reads the resolved config that `ar-gen train` wrote to `workdir/config.json`, with `KEY=VALUE` overrides
  (e.g. `model.attn_impl=xla` to sample with another kernel) applied and checked."""
  path = fileio.join(workdir, "config.json")
  if fileio.isfile(workdir):
    raise ConfigError(f"--workdir {workdir} is a file, not a work directory")
  if not fileio.isfile(path):
    raise ConfigError(f"{path} does not exist: is {workdir!r} the work directory of an `ar-gen train` run?")
  try:
    tree = json.loads(fileio.read_text(path))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} is not a readable config ({type(e).__name__}: {e}); it is the resolved config that "
                      "`ar-gen train` writes: restore it from a copy or train again in a new work directory") from e
  if not isinstance(tree, dict) or "task" not in tree:
    raise ConfigError(f"{path} is not an ar-gen config (a JSON object with a 'task' key)")
  config = ml_collections.ConfigDict(_lists_to_tuples(tree))
  if overrides:
    apply_overrides(config, overrides)
    validate(config, path)
  config.lock()
  return config


def _lists_to_tuples(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _lists_to_tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_lists_to_tuples(v) for v in tree)
  return tree


def base_config(**data) -> ml_collections.ConfigDict:
  """The keys every training config has (DESIGN.md), with defaults; `data` updates the data section."""
  c = ml_collections.ConfigDict()
  c.task = ""
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 64
  c.log_every_steps = 50
  c.ckpt_every_steps = 500
  c.keep_ckpts = 2
  c.vis_every_steps = 500
  c.vis_examples = 8
  c.ema_decay = 0.0
  c.grad_accum_steps = 1  # split each batch into this many micro-batches, gradients summed (same update, less memory)
  c.data = ml_collections.ConfigDict(dict(
      train="", eval="", data_dir="", image_size=256, channels=3, resize="crop", random_flip=False,
      num_threads=4, prefetch=8))
  c.data.update(data)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding = ml_collections.ConfigDict(dict(
      rules=(("embed", "fsdp"), ("mlp", "tensor"), ("qkv", "tensor"), ("vocab", "tensor")), fsdp_min_size=2 ** 14))
  # how often the processes agree on a preemption notice; the tests' fault hooks join this group (FAULT_HOOKS)
  c.fault = ml_collections.ConfigDict(dict(preemption_check_steps=10))
  c.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-4, end_lr_factor=0.1, warmup_steps=100, schedule="cosine", hold_fraction=0.0, b1=0.9, b2=0.95,
      weight_decay=0.0, grad_clip=1.0))
  c.model = ml_collections.ConfigDict()
  return c


def sample_quality_eval(every_steps: int = 0, num_images: int = 1000, batch_size: int = 250, classes: str = "all",
                        seed: int = 0, ref: str = "", features: str = "inception",
                        fid_batch_size: int = 200) -> ml_collections.ConfigDict:
  """A `config.evals.NAME` section of kind `sample_quality` (`ar_gen/eval/evaluators.py`) with its defaults:
  `every_steps` (0 = off), samples (`num_images`, `batch_size`, `classes`, `seed`), the reference images `ref`
  and the `features` (`inception` or `classifier:DIR`) of `ar-gen fid`."""
  return ml_collections.ConfigDict(dict(kind="sample_quality", every_steps=every_steps, num_images=num_images,
                                        batch_size=batch_size, classes=classes, seed=seed, ref=ref,
                                        features=features, fid_batch_size=fid_batch_size))
