"""XLA:CPU settings, per jaxlib minor version, applied when `wm_jax` is imported.

jaxlib 0.10 (speed): XLA:CPU hands convolutions to its "YNN" library fusions by default;
handing them to XNNPACK's instead makes DIAMOND's U-Net update 1.3x faster and its sampling
1.4x faster on a 2-core AMD EPYC (fp32, `benchmarks.diamond_official`: 1.05 -> 0.80 s per
update at batch 8, 7.8 -> 11.5 frames/s), and the stride-1 phase convolutions of
nets.DownConv / UpConv (DreamerV3, STORM, World Models) too: forward + backward of the size1m
encoder layers 313/100/72/19 -> 111/46/20/13 ms and decoder layers 24/30/62/307 ->
13/19/46/212 ms at batch 16 x 64.

jaxlib 0.11 (correctness): its YNN fusions return NaN for finite inputs. STORM's critic
(bfloat16 Dense -> LayerNorm -> SiLU x 2 -> Dense, flax) on 17,408 feature rows of a real
Atari batch gave 2.8-4.4 M non-finite logits out of 4.4 M, a different count on every call,
under `jax.jit`, and none run eagerly, with `capture_intermediates`, or on jaxlib 0.10.2; the
STORM atari100k run stopped on a NaN actor loss at its first update. With YNN fusions off
(`--xla_cpu_experimental_ynn_fusion_type=`) every logit is finite, so they are switched off.

The flags are experimental and version-specific: each set is only added for the jaxlib minor
version it was measured on, never when XLA_FLAGS already sets a fusion type, and must be in the
environment before JAX starts its CPU backend (they are ignored after).
"""

from __future__ import annotations

import os

FLAGS_BY_JAXLIB = {
    "0.10.": ("--xla_cpu_experimental_xnn_fusion_type=individual_convolution "
              "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"),
    "0.11.": "--xla_cpu_experimental_ynn_fusion_type=",
}


def flags_for(jaxlib_version: str) -> str | None:
  """The XLA_FLAGS this module adds for `jaxlib_version`, or None."""
  for prefix, flags in FLAGS_BY_JAXLIB.items():
    if jaxlib_version.startswith(prefix):
      return flags
  return None


def apply_cpu_flags() -> bool:
  """Appends the installed jaxlib's flags to XLA_FLAGS (unless it sets a fusion type); True if it did."""
  try:
    from jaxlib import version
  except ImportError:
    return False
  current = os.environ.get("XLA_FLAGS", "")
  flags = flags_for(version.__version__)
  if flags is None or "fusion_type" in current:
    return False
  os.environ["XLA_FLAGS"] = f"{current} {flags}".strip()
  return True
