"""`ar-gen sample --draft-workdir / --jacobi`: speculative samples and speculative.json from trained runs, greedy
speculative samples equal to greedy plain ones, and the refusals (flags, drafts of another tokenizer or order)."""

import json
import types

import ml_collections
import numpy as np
import pytest

from ar_gen import cli
from ar_gen.decoding.speculative_sampling import Speculation
from ar_gen.errors import UserError
from ar_gen.families import mar
from ar_gen.families._discrete import FrozenTokenizerTask
from ar_gen.layout import TokenLayout


def _sample(workdir, out, *flags):
  return cli.main(["sample", "--workdir", workdir, "--num-images", "4", "--batch-size", "2", "--classes", "1,2",
                   "--seed", "3", "--out", str(out), *flags])


def test_a_run_drafting_for_itself_is_accepted_and_the_statistics_are_written(trained_next_token_workdir, tmp_path,
                                                                               capsys):
  assert _sample(trained_next_token_workdir, tmp_path / "s", "--draft-workdir", trained_next_token_workdir,
                 "--gamma", "3", "--prefill", "0.25") == 0, capsys.readouterr().err
  record = json.loads((tmp_path / "s" / "speculative.json").read_text())
  assert record["method"] == "draft" and record["gamma"] == 3 and record["prefill_steps"] == 2 * 16
  assert record["acceptance"] > 0.99 and record["fallbacks"] == 0
  assert record["target_calls"] < record["plain_target_calls"] == 2 * 64  # 2 batches of 64 tokens
  assert record["tokens_per_round"] > 3.5  # 3 accepted drafts + the target's own token, nearly always
  with np.load(tmp_path / "s" / "samples.npz") as f:
    assert f["arr_0"].shape == (4, 16, 16, 1)


@pytest.mark.parametrize("flags", [("--jacobi", "--gamma", "4"), ("--draft-workdir", None, "--gamma", "2")],
                         ids=["jacobi", "draft"])
def test_greedy_speculative_samples_are_the_greedy_samples(trained_next_token_workdir, tmp_path, flags, capsys):
  flags = tuple(trained_next_token_workdir if f is None else f for f in flags)
  assert _sample(trained_next_token_workdir, tmp_path / "plain", "--temperature", "0") == 0
  assert _sample(trained_next_token_workdir, tmp_path / "spec", "--temperature", "0", *flags) == 0, \
      capsys.readouterr().err
  with np.load(tmp_path / "plain" / "samples.npz") as a, np.load(tmp_path / "spec" / "samples.npz") as b:
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
  assert json.loads((tmp_path / "spec" / "speculative.json").read_text())["method"] == flags[0][2:].split("-")[0]


def test_bad_speculation_flags_are_refused_by_name(trained_next_token_workdir, trained_vq_workdir, tmp_path, capsys):
  cases = [(("--gamma", "3"), "--gamma and --prefill are settings"),
           (("--jacobi", "--draft-workdir", trained_next_token_workdir), "exclude each other"),
           (("--jacobi", "--gamma", "0"), "at least 1"),
           (("--jacobi", "--prefill", "1"), "[0, 1)"),
           (("--draft-workdir", trained_vq_workdir), "not a generator"),
           (("--draft-workdir", str(tmp_path / "missing")), "config.json")]
  for i, (flags, message) in enumerate(cases):
    assert _sample(trained_next_token_workdir, tmp_path / f"x{i}", *flags) == 2, flags
    assert message in capsys.readouterr().err, flags
    assert not (tmp_path / f"x{i}").exists()


def _task(fingerprint="abc", step=4, order="raster", diffusion_steps=25, task="next_token", grid=(2, 2)):
  tokenizer = types.SimpleNamespace(identity={"fingerprint": fingerprint, "step": step, "workdir": f"/tok{step}"})
  config = types.SimpleNamespace(task=task, model=ml_collections.ConfigDict({"order": order, "num_classes": 10}),
                                 sample=types.SimpleNamespace(diffusion_steps=diffusion_steps))
  return types.SimpleNamespace(tokenizer=tokenizer, layout=TokenLayout.raster(grid, 4), config=config)


def test_a_draft_of_another_tokenizer_order_or_head_is_refused():
  target = _task()
  FrozenTokenizerTask.check_draft(target, _task(), "--draft-workdir")  # the same tokenizer and layout
  with pytest.raises(UserError, match="/tok5 at step 5.*/tok4 at step 4"):
    FrozenTokenizerTask.check_draft(target, _task(step=5), "--draft-workdir")
  with pytest.raises(UserError, match="2 x 3|2x3|generates .* the target"):
    FrozenTokenizerTask.check_draft(target, _task(grid=(2, 3)), "--draft-workdir")
  with pytest.raises(UserError, match="needs --draft-workdir"):
    FrozenTokenizerTask.check_draft(target, None, "--draft-workdir")
  how = Speculation(gamma=2)
  check = lambda t, d, h=how: mar.Task.check_speculation(types.SimpleNamespace(
      check_draft=lambda x, w: FrozenTokenizerTask.check_draft(t, x, w), config=t.config), h, d)
  check(_task(task="mar"), _task(task="mar"))
  with pytest.raises(UserError, match="masked order is not built yet"):
    check(_task(order="masked"), _task())
  with pytest.raises(UserError, match="must be causal"):
    check(_task(), _task(order="masked"))
  with pytest.raises(UserError, match="25 diffusion steps.*50"):
    check(_task(diffusion_steps=50), _task())
  with pytest.raises(UserError, match="needs token ids"):
    check(_task(), _task(), Speculation(jacobi=True))


def test_speculative_shards_merge_into_one_statistics_file_and_mixed_shards_are_refused(trained_next_token_workdir,
                                                                                        tmp_path, capsys):
  out = tmp_path / "sharded"
  for i in range(2):
    assert _sample(trained_next_token_workdir, out, "--jacobi", "--gamma", "3", "--num-shards", "2",
                   "--shard-index", str(i)) == 0, capsys.readouterr().err
  shards = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("*.speculative.json"))]
  assert len(shards) == 2
  assert cli.main(["merge-samples", "--out", str(out)]) == 0, capsys.readouterr().err
  merged = json.loads((out / "speculative.json").read_text())
  assert merged["method"] == "jacobi" and merged["gamma"] == 3 and merged["shards"] == 2
  for key in ("rounds", "drafted", "accepted", "plain_target_calls"):
    assert merged[key] == shards[0][key] + shards[1][key], key
  assert merged["num_images"] == 4
  # a shard sampled another way (plain) is named as a difference, and nothing is merged
  mixed = tmp_path / "mixed"
  assert _sample(trained_next_token_workdir, mixed, "--jacobi", "--num-shards", "2", "--shard-index", "0") == 0
  assert _sample(trained_next_token_workdir, mixed, "--num-shards", "2", "--shard-index", "1") == 0
  capsys.readouterr()
  assert cli.main(["merge-samples", "--out", str(mixed)]) == 2
  assert "speculative" in capsys.readouterr().err and not (mixed / "samples.npz").exists()
