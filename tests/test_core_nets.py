"""The phase (space-to-depth, sub-pixel) convolutions of wm_jax/core/nets.py compute exactly
what flax's strided convolutions do."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from wm_jax.core.nets import DownConv, UpConv


@pytest.mark.parametrize("kernel", [3, 4, 5])
@pytest.mark.parametrize("ours, theirs", [
    (DownConv, lambda f, k: nn.Conv(f, (k, k), strides=2, padding="SAME")),
    (UpConv, lambda f, k: nn.ConvTranspose(f, (k, k), strides=(2, 2), padding="SAME")),
], ids=["stride-2 conv", "stride-2 transposed conv"])
@pytest.mark.parametrize("channels, features", [(5, 7), (40, 32)],
                         ids=["narrow", "wide"])   # wide: UpConv's separate phase convolutions
def test_same_parameters_same_outputs_same_gradients(ours, theirs, kernel, channels, features):
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, channels))
  reference = theirs(features, kernel)
  params = jax.tree.map(lambda p: p + 0.1, reference.init(jax.random.key(1), x))  # bias != 0
  mine = ours(features, kernel)
  assert jax.tree.structure(mine.init(jax.random.key(1), x)) == jax.tree.structure(params)
  np.testing.assert_allclose(mine.apply(params, x), reference.apply(params, x), atol=1e-5)
  loss = lambda module: lambda p, x: (module.apply(p, x) ** 2).sum()
  for a, b in zip(jax.tree.leaves(jax.grad(loss(mine), argnums=(0, 1))(params, x)),
                  jax.tree.leaves(jax.grad(loss(reference), argnums=(0, 1))(params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
