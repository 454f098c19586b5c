"""Coarse-to-fine: the cluster table is onto [0, K) and is the nearest centroid of each code, the clustered tokenizer
loads as a frozen tokenizer, stage 2 is non-causal, the cluster mask keeps every fine token in its cluster, stage 1
(a next-token model over K labels) decodes cached as in one pass, the two stages train and sample end to end, and
bad input is named."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen import config as config_lib
from ar_gen.commands import cluster_codebook
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.errors import UserError
from ar_gen.families import coarse_to_fine
from ar_gen.layout import TokenLayout
from ar_gen.models.coarse_to_fine import FineTokenModel
from ar_gen.models.next_token import NextTokenModel
from ar_gen.runs import frozen as frozen_lib
from ar_gen.runs import run as run_lib
from tests.conftest import CONFIGS, cached_logits, tiny_ar_config, tiny_config

K = 8


@pytest.fixture(scope="module")
def clustered_workdir(trained_vq_workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("ctf") / "tok")
  cluster_codebook.cluster(trained_vq_workdir, K, out, iters=10)
  return out


@pytest.fixture(scope="module")
def stage1_workdir(clustered_workdir, tmp_path_factory):
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("ctf_stage1"))
  trainer.train(tiny_ar_config("mnist_ctf_stage1.py", clustered_workdir), workdir)
  return workdir


def test_the_table_is_onto_and_each_code_goes_to_its_nearest_centroid(trained_vq_workdir, clustered_workdir):
  composed = frozen_lib.load("tokenizer", clustered_workdir)
  module = composed.module()
  table = np.asarray(module.table[...])
  assert sorted(set(table.tolist())) == list(range(K))
  vq = frozen_lib.load("tokenizer", trained_vq_workdir).module()
  codes = np.asarray(vq.quantizer.codes(), np.float64)  # l2-normalised: clustered on the sphere
  centroids = np.asarray(module.centroids[...], np.float64)
  np.testing.assert_array_equal(table, np.argmax(codes @ centroids.T, axis=1))
  np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
  assert composed.layout == TokenLayout.raster(vq.layout.grid, K) and module.fine_layout == vq.layout
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1), minval=-1, maxval=1)
  np.testing.assert_array_equal(module.encode(images), table[np.asarray(vq.encode(images))])
  assert module.decode(module.encode(images)).shape == images.shape
  config = config_lib.load_workdir_config(clustered_workdir)
  assert config.cluster.source.step == frozen_lib.load("tokenizer", trained_vq_workdir).step
  assert config.cluster.metric == "cosine"


def _random_head(model, seed=1):
  model.output.kernel[...] = 0.5 * jax.random.normal(jax.random.PRNGKey(seed), model.output.kernel.shape)
  return model


GRID, V, CLASSES = (3, 4), 24, 5


@pytest.mark.parametrize("j", [2, 7, 11])
def test_stage_two_is_non_causal(j):
  model = _random_head(FineTokenModel(TokenLayout.raster(GRID, V), K, CLASSES, 2, 32, 4, rngs=nnx.Rngs(0)))
  coarse = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, K)
  labels = jnp.array([0, 3])
  a = model(coarse, labels)
  b = model(coarse.at[:, j].set((coarse[:, j] + 1) % K), labels)
  assert a.shape == (2, 12, V)
  for i in (0, j - 1, j, 11):  # positions before the change see it, as do those after
    if i >= 0:
      assert float(jnp.abs(a[:, i] - b[:, i]).max()) > 1e-4, i


def _stages():
  coarse_layout, fine_layout = TokenLayout.raster(GRID, K), TokenLayout.raster(GRID, V)
  stage1 = _random_head(NextTokenModel(coarse_layout, CLASSES, 2, 32, 4, rngs=nnx.Rngs(3)))
  stage2 = _random_head(FineTokenModel(fine_layout, K, CLASSES, 2, 32, 4, rngs=nnx.Rngs(4)), seed=5)
  return stage1, stage2


def test_with_the_cluster_mask_every_fine_token_lies_in_its_coarse_cluster():
  table = jnp.arange(V, dtype=jnp.int32) % K
  stage1, stage2 = _stages()
  cond = {"label": jnp.arange(16, dtype=jnp.int32) % CLASSES}
  cfg, fine_cfg = SamplingConfig(temperature=1.0, cfg_scale=2.0), SamplingConfig(temperature=2.0)
  coarse, fine = coarse_to_fine.two_stage_tokens(stage1, stage2, table, cond, jax.random.PRNGKey(0), cfg, fine_cfg)
  np.testing.assert_array_equal(np.asarray(table)[np.asarray(fine)], np.asarray(coarse))
  _, unmasked = coarse_to_fine.two_stage_tokens(stage1, stage2, None, cond, jax.random.PRNGKey(0), cfg, fine_cfg)
  assert np.mean(np.asarray(table)[np.asarray(unmasked)] != np.asarray(coarse)) > 0.5  # the mask does the work
  assert len(np.unique(np.asarray(coarse))) > 1


def test_stage_one_over_the_clustered_tokenizer_decodes_cached_as_the_full_forward(clustered_workdir):
  layout = frozen_lib.load("tokenizer", clustered_workdir).layout
  model = _random_head(NextTokenModel(layout, CLASSES, 2, 32, 4, rngs=nnx.Rngs(0)))
  assert model.output.kernel.shape[-1] == K and model.tok_embeddings.embedding.shape[0] == K
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, layout.num_tokens), 0, K)
  labels = jnp.array([0, 2, CLASSES])
  np.testing.assert_allclose(cached_logits(model, tokens, labels), model(tokens, labels), atol=1e-4, rtol=0)


def test_stage_two_trains_alone_and_samples_once_given_its_stage_one(clustered_workdir, stage1_workdir, tmp_path):
  from ar_gen.commands import sample
  from ar_gen.train import trainer
  stage2 = str(tmp_path / "stage2")
  metrics = trainer.train(tiny_ar_config("mnist_ctf.py", clustered_workdir, "frozen.stage1="), stage2)
  assert np.isfinite(metrics["loss"]) and metrics["loss"] < np.log(256 / K) + 0.5  # masked: about log(cluster size)
  with pytest.raises(UserError, match="needs its stage 1: frozen.stage1 is empty; pass --config.frozen.stage1=DIR"):
    sample.sample(stage2, str(tmp_path / "none"), num_images=4, batch_size=4)
  result = sample.sample(stage2, str(tmp_path / "samples"), num_images=4, batch_size=4,
                         overrides=(f"frozen.stage1={stage1_workdir}",))
  assert result["num_images"] == 4
  images = np.load(tmp_path / "samples" / "samples.npz")["arr_0"]
  assert images.shape == (4, 16, 16, 1) and images.std() > 0


def test_a_stage_two_config_naming_a_missing_stage_one_run_is_named(clustered_workdir, tmp_path):
  missing = str(tmp_path / "no_stage1")
  config = tiny_ar_config("mnist_ctf.py", clustered_workdir, f"frozen.stage1={missing}")
  with pytest.raises(FileNotFoundError, match=f"frozen.stage1='{missing}': no config.json there"):
    run_lib.Run(config)


def test_a_stage_one_over_another_tokenizer_is_refused(clustered_workdir, trained_next_token_workdir):
  config = tiny_ar_config("mnist_ctf.py", clustered_workdir, f"frozen.stage1={trained_next_token_workdir}")
  with pytest.raises(config_lib.ConfigError, match="generates the coarse labels of .* both stages must use the same"):
    run_lib.Run(config)


def test_stage_two_takes_the_vqs_token_set_and_refuses_a_set_of_coarse_labels(trained_vq_workdir, clustered_workdir,
                                                                             tmp_path):
  from ar_gen.commands import extract_tokens
  from ar_gen.data import sources
  fine, coarse = str(tmp_path / "fine"), str(tmp_path / "coarse")
  extract_tokens.extract(trained_vq_workdir, "bundled:mnist:test", fine)
  extract_tokens.extract(clustered_workdir, "bundled:mnist:test", coarse)
  run = run_lib.Run(tiny_ar_config("mnist_ctf.py", clustered_workdir, "frozen.stage1=", f"data.train=tokens:{fine}"))
  run.task.check_source(sources.get_source(f"tokens:{fine}", "train"))
  with pytest.raises(ValueError, match=f"reads the tokens of {trained_vq_workdir} .* extract-tokens --workdir "
                                       f"{trained_vq_workdir} ... --overwrite`$"):
    run.task.check_source(sources.get_source(f"tokens:{coarse}", "train"))


def test_a_stage_one_of_other_classes_is_refused(clustered_workdir, stage1_workdir):
  config = tiny_ar_config("mnist_ctf.py", clustered_workdir, f"frozen.stage1={stage1_workdir}", "model.num_classes=7")
  with pytest.raises(config_lib.ConfigError, match="knows 10 classes, stage 2 7"):
    run_lib.Run(config)


def test_stage_two_refuses_a_tokenizer_that_is_not_clustered(trained_vq_workdir):
  config = tiny_ar_config("mnist_ctf.py", trained_vq_workdir, "frozen.stage1=")
  with pytest.raises(config_lib.ConfigError, match="needs frozen.tokenizer to be a clustered tokenizer"):
    run_lib.Run(config)


def test_cluster_codebook_names_bad_input(trained_vq_workdir, trained_next_token_workdir, clustered_workdir,
                                          tmp_path):
  out = str(tmp_path / "out")
  with pytest.raises(UserError, match=r"--k 300: the VQ tokenizer .* has 256 codes, so K must lie in \[1, 256\]"):
    cluster_codebook.cluster(trained_vq_workdir, 300, out)
  with pytest.raises(UserError, match="holds a 'next_token' run; cluster-codebook clusters the codebook"):
    cluster_codebook.cluster(trained_next_token_workdir, 4, out)
  with pytest.raises(UserError, match="holds a 'clustered_tokenizer' run"):
    cluster_codebook.cluster(clustered_workdir, 4, out)
  lfq = str(tmp_path / "lfq")
  run_lib.save_workdir(tiny_config("mnist_lfq.py"), lfq, lambda module: module)
  with pytest.raises(UserError, match="is a 'lfq' tokenizer; cluster-codebook needs a VQ tokenizer"):
    cluster_codebook.cluster(lfq, 4, out)
  with pytest.raises(UserError, match="exists and is not an empty directory"):
    cluster_codebook.cluster(trained_vq_workdir, 4, clustered_workdir)
  assert not os.path.exists(out)


def test_a_clustered_tokenizer_is_not_trainable(clustered_workdir, tmp_path):
  from ar_gen.train import trainer
  config = config_lib.load_workdir_config(clustered_workdir)
  with pytest.raises(UserError, match="is not trained: `ar-gen cluster-codebook"):
    trainer.train(config, str(tmp_path / "w"))


@pytest.mark.parametrize("size, stage1, llamagen", [("B", 86.5, 110.9), ("L", 310.4, 342.9), ("XL", 734.1, 774.7)])
def test_parameter_counts_at_the_papers_sizes(size, stage1, llamagen):
  """Stage 1 loses exactly the vocabulary (the paper: 111 -> 87, 343 -> 310, 775 -> 734M); stage 2 at LlamaGen-L's
  sizes has 326.7M with its 512-way input embedding (the paper says 343M): docs/ctf.md's counts."""
  from ar_gen.models.next_token import PRESETS
  from ar_gen.nn.layers import swiglu_hidden
  count = lambda make: sum(x.size for x in jax.tree.leaves(nnx.state(nnx.eval_shape(make), nnx.Param))) / 1e6
  depth, dim, heads = PRESETS[size]
  hidden = swiglu_hidden(dim, 256)
  next_token_of = lambda vocab: lambda: NextTokenModel(TokenLayout.raster((16, 16), vocab), 1000, depth, dim, heads,
                                                        mlp_hidden=hidden, rngs=nnx.Rngs(0))
  assert round(count(next_token_of(512)), 1) == stage1 and round(count(next_token_of(16384)), 1) == llamagen
  if size == "L":
    stage2 = lambda: FineTokenModel(TokenLayout.raster((16, 16), 16384), 512, 1000, depth, dim, heads,
                                    mlp_hidden=hidden, rngs=nnx.Rngs(0))
    assert round(count(stage2), 1) == 326.7


def test_the_ctf_configs_load_with_the_papers_sampling():
  for spec in ("imagenet256_ctf.py", "imagenet256_ctf_stage1.py:size=XL", "mnist_ctf.py"):
    config = config_lib.load_config(os.path.join(CONFIGS, spec))
    assert config.sample.cfg_scale == 2.0
  stage2 = config_lib.load_config(os.path.join(CONFIGS, "imagenet256_ctf.py"))
  assert (stage2.model.size, stage2.sample.temperature, stage2.sample.fine_temperature) == ("L", 1.1, 1.1)
  assert stage2.sample.fine_top_k == 0 and stage2.model.cluster_mask
