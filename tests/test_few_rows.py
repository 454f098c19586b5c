"""`few_rows_view`: products of few rows from transposed kernels equal the plain products (CPU sampling)."""

import jax
import numpy as np
from flax import nnx

from ar_gen.nn.few_rows import few_rows_view


def test_few_rows_view_gives_the_plain_products_and_leaves_the_module_alone():
  model = nnx.Sequential(nnx.Linear(48, 96, rngs=nnx.Rngs(0)), nnx.Linear(96, 40, use_bias=False, rngs=nnx.Rngs(1)))
  before = model.layers[0].dot_general
  for rows in (1, 5, 64, 65):
    x = jax.random.normal(jax.random.PRNGKey(rows), (rows, 48))
    plain = jax.jit(lambda x: model(x))(x)
    hlo = jax.jit(lambda x: few_rows_view(model)(x)).lower(x).as_text()
    fast = jax.jit(lambda x: few_rows_view(model)(x))(x)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=1e-5, atol=1e-5)
    assert ("optimization_barrier" in hlo) == (rows <= 64)  # the transposed form only for few rows
  x_BLC = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 48))  # leading dims are rows
  np.testing.assert_allclose(np.asarray(jax.jit(lambda x: few_rows_view(model)(x))(x_BLC)),
                             np.asarray(model(x_BLC)), rtol=1e-5, atol=1e-5)
  assert model.layers[0].dot_general is before
