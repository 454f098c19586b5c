"""Shared test fixtures: tiny configs, a trained tiny tokenizer work directory, brief progressive tokenizers; a JAX
compilation cache shared by the tests (kept in .pytest_cache between runs)."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Many tests compile the same tiny train and sampling steps (each `trainer.train` jits afresh). One persistent
# compilation cache, shared by both xdist workers and by the subprocesses tests start (they inherit these
# variables), turns the repeats into cache reads. Entries are keyed by the program, the compile options, the XLA
# flags and the backend, so a hit is the same executable; a size limit turns on JAX's file lock, so concurrent
# workers never read a half-written entry (a worker killed mid-write can leave an unreadable entry: JAX warns and
# compiles). One directory per jaxlib version. Measured on the 2-core machine: the exact-resume test, 77 s without,
# 59 s with a cold cache, 28 s warm. Set before JAX is imported, and left alone if the caller set them.
import jaxlib  # pylint: disable=g-import-not-at-top,wrong-import-position  # jaxlib only: jax reads the variables

for _name, _value in (("JAX_COMPILATION_CACHE_DIR",
                       os.path.join(REPO, ".pytest_cache", f"jax_compilation_{jaxlib.__version__}")),
                      ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5"),
                      ("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))):
  os.environ.setdefault(_name, _value)

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIGS = os.path.join(REPO, "configs")

TINY = ("model.channels=8", "model.channel_mult=(1,2)", "model.z_channels=16", "batch_size=8",
        "data.image_size=16", "log_every_steps=1", "vis_every_steps=3", "data.num_threads=1")


def tiny_config(name: str = "mnist_vq.py", *overrides: str):
  """A config from configs/ shrunk to run a step in well under a second on CPU."""
  return config_lib.load_config(os.path.join(CONFIGS, name), TINY + overrides)


def train_progressive_tokenizer(workdir: str, name: str, quantizer: str) -> str:
  """A 60-step multi-scale or frequency-band tokenizer (configs/NAME, 8-d codes in `model.QUANTIZER`) in workdir."""
  from ar_gen.train import trainer
  trainer.train(tiny_config(name, "total_steps=60", "ckpt_every_steps=60", "log_every_steps=30", "vis_every_steps=60",
                            "optimizer.warmup_steps=10", f"model.{quantizer}.code_dim=8"), workdir)
  return workdir


def assert_psnr_rises_with_each_map(workdir: str) -> None:
  """eval-tokenizer's PSNR from every prefix of the 6 token maps rises strictly, the last equal to the full PSNR."""
  from ar_gen.eval import tokenizer_eval
  result = tokenizer_eval.evaluate(workdir, max_examples=200)
  by_map = result["psnr_by_scales"]
  assert len(by_map) == 6 and by_map[-1] == pytest.approx(result["psnr"], abs=1e-3)
  assert all(b > a for a, b in zip(by_map, by_map[1:])), by_map


def cached_logits(model, tokens_BN, labels_B):
  """The logits [B, N, V] of feeding `tokens` one at a time through a next-token model's cached steps (the step
  contract of the sampler driver), each step jitted once (op by op, 64 steps take minutes on 2 cores)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, carry, index, cache, token_B1):
    m = nnx.merge(graphdef, state)
    logits, cache = m.step(carry, index, cache)
    return logits[:, 0], cache, m.feed(token_B1, index, carry)

  _, carry, cache = model.begin({"label": labels_B})
  cached = []
  for i in range(tokens_BN.shape[1]):
    logits, cache, carry = step(state, carry, jnp.int32(i), cache, tokens_BN[:, i:i + 1])
    cached.append(logits)
  return jnp.stack(cached, 1)


def tiny_ar_config(name: str, tokenizer_workdir: str, *overrides: str):
  """An AR config from configs/ shrunk to 3 steps of a one-block model over a tiny tokenizer's 16x16 images."""
  return config_lib.load_config(
      os.path.join(CONFIGS, name),
      ("data.image_size=16", "batch_size=8", "total_steps=3", "ckpt_every_steps=3", "log_every_steps=1",
       "vis_every_steps=3", "vis_examples=4", "model.depth=1", "model.dim=32", "model.num_heads=2",
       f"frozen.tokenizer={tokenizer_workdir}", "data.num_threads=1") + overrides)


@pytest.fixture(scope="session")
def trained_vq_workdir(tmp_path_factory):
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("vq"))
  trainer.train(tiny_config("mnist_vq.py", "total_steps=4", "ckpt_every_steps=2", "ema_decay=0.9"), workdir)
  return workdir


@pytest.fixture(scope="session")
def trained_next_token_workdir(trained_vq_workdir, tmp_path_factory):
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("next_token"))
  config = tiny_ar_config("mnist_next_token.py", trained_vq_workdir)
  trainer.train(config, workdir)
  return workdir
