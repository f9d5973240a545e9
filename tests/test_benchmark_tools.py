"""benchmarks/flops.py (the MFU numerator), the learning benchmarks' curves, the run-log reading
and the SIGINT clock of
gpu_check and seed_scaling (benchmarks/run_figures.py), gpu_check's check names and sets, the
per-jaxlib XLA:CPU flags, and the environment an official JAX code runs in."""

import json
import os
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest
from absl import app

from benchmarks import gpu_check
from benchmarks.flops import count_flops, mfu
from benchmarks.learning import eval_curve, plot_curves, train_curve
from benchmarks.official import official_env
from benchmarks.run_figures import run_command, steady_figures, updates_began
from wm_jax import xla_cpu


def matmul_scan(x, w, length=10):
  return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=length)[0]


def test_scan_counts_its_body_length_times():
  x, w = jnp.ones((64, 256)), jnp.ones((256, 256))
  one = 2 * 64 * 256 * 256
  assert count_flops(matmul_scan, x, w) == {"flops": 10 * one, "while_loops_counted_once": 0}
  # XLA's own cost analysis counts the scan body once: the reason flops.py exists.
  xla = jax.jit(matmul_scan).lower(x, w).compile().cost_analysis()
  xla = xla[0] if isinstance(xla, list) else xla
  assert xla["flops"] < 2 * one
  grad = jax.grad(lambda x, w: matmul_scan(x, w).sum(), argnums=1)
  assert count_flops(grad, x, w)["flops"] == 3 * 10 * one   # forward, dx and dw per step


def test_conv_dot_batch_cond_and_while():
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert count_flops(conv, jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 16)))["flops"] == (
      2 * (2 * 8 * 8 * 16) * (3 * 3 * 3))
  batched = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
  assert count_flops(batched, jnp.ones((4, 5, 6)), jnp.ones((4, 6, 7)))["flops"] == 2 * 4 * 5 * 6 * 7
  x = jnp.ones((4, 4))
  costly_branch = lambda x: jax.lax.cond(x.sum() > 0, lambda: x @ x @ x, lambda: x)
  assert count_flops(costly_branch, x)["flops"] == 2 * 2 * 4 * 4 * 4
  loop = lambda x: jax.lax.while_loop(lambda c: c.sum() < 10, lambda c: c @ c, x)
  assert count_flops(loop, x) == {"flops": 2 * 4 * 4 * 4, "while_loops_counted_once": 1}


def test_mfu_needs_a_known_peak():
  assert mfu(10**12, 1.0, "bfloat16") is None   # the CPU has no entry


def test_learning_curves_average_episodes_per_interval_and_plot(tmp_path):
  lines = [("train", 40, 1.0), ("train", 100, 3.0), ("train", 101, 5.0), ("eval", 100, 2.0),
           ("eval", 100, 4.0), ("train", 250, 7.0), ("eval", 300, 6.0)]
  with open(tmp_path / "scores.jsonl", "w") as f:
    for kind, step, ret in lines:
      f.write(json.dumps({"kind": kind, "agent_step": step, "return": ret}) + "\n")
  assert eval_curve(str(tmp_path)) == [
      {"agent_step": 100, "mean_return": 3.0, "episodes": 2},
      {"agent_step": 300, "mean_return": 6.0, "episodes": 1}]
  # windows (0, 100], (100, 200], (200, 300]: each episode in the window its end step falls in
  assert train_curve(str(tmp_path), 100) == [
      {"agent_step": 100, "mean_return": 2.0, "episodes": 2},
      {"agent_step": 200, "mean_return": 5.0, "episodes": 1},
      {"agent_step": 300, "mean_return": 7.0, "episodes": 1}]
  path = str(tmp_path / "curve.png")
  plot_curves(path, "sprite/reach", {"eval": eval_curve(str(tmp_path)), "empty": []},
              {"random": 1.4})
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("run_dir", ["", "seed_3"])   # one seed, or the first of stacked seeds
def test_steady_figures_skip_the_interval_that_compiled_the_update(tmp_path, run_dir):
  rows = [{"agent_step": 128, "env_frame": 512, "steps_per_second": 500.0, "updates": 0},
          {"agent_step": 256, "env_frame": 1024, "steps_per_second": 2.0, "updates": 10},
          {"agent_step": 384, "env_frame": 1536, "steps_per_second": 64.0, "updates": 138},
          {"agent_step": 512, "env_frame": 2048, "steps_per_second": 32.0, "updates": 266}]
  (tmp_path / run_dir).mkdir(exist_ok=True)
  (tmp_path / run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  figures = steady_figures(str(tmp_path))
  assert figures["steady_seconds"] == pytest.approx(2.0 + 4.0)
  assert figures["agent_steps_per_s"] == pytest.approx(256 / 6.0, rel=1e-3)
  assert figures["env_frames_per_s"] == pytest.approx(256 * 4 / 6.0, rel=1e-3)
  assert figures["updates_per_s"] == pytest.approx(256 / 6.0, rel=1e-3)


def test_xla_cpu_flags_per_jaxlib_and_never_over_the_users(monkeypatch):
  assert "xnn_fusion_type=individual_convolution" in xla_cpu.flags_for("0.10.2")
  assert xla_cpu.flags_for("0.11.2") == "--xla_cpu_experimental_ynn_fusion_type="
  assert xla_cpu.flags_for("0.9.0") is None
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=default")
  assert not xla_cpu.apply_cpu_flags()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=default"


def test_gpu_check_refuses_unknown_checks_in_one_sentence():
  gpu_check.check_names(["speed:storm:paper:bfloat16", "official:storm", "official:diamond",
                         "atari:iris", "atari:dreamerv3:5"])
  for bad in ("speed:storm", "official:diamond:float32", "official:dreamerv3", "atari",
              "atari:dreamerv3:five"):
    with pytest.raises(app.UsageError, match=f"Unknown check '{bad}': use speed:"):
      gpu_check.check_names([bad])


def test_gpu_check_sets_and_own_time_limits():
  checks = gpu_check.expand_checks(
      list(gpu_check.CHECK_SETS) + ["atari:iris@200", "official:diamond"])
  assert checks[0] == ("speed:dreamerv3:S:bfloat16", None)
  assert ("atari:dreamerv3:5", 130) in checks and ("speed:dreamerv3:S:float32", None) in checks
  assert checks[-2:] == [("atari:iris", 200), ("official:diamond", None)]
  with pytest.raises(app.UsageError, match="Bad time limit in 'atari:iris@2m': write the seconds"):
    gpu_check.expand_checks(["atari:iris@2m"])
  with pytest.raises(app.UsageError, match="Unknown check 'dreamer': use speed:"):
    gpu_check.expand_checks(["dreamer"])


def test_sigint_clock_starts_when_the_first_update_is_logged(tmp_path):
  """The run is interrupted `sigint_after_s` after its metrics show an update, not after it
  started: a slow start (compile) no longer eats the measured window."""
  child = textwrap.dedent(f"""
      import json, signal, sys, time
      signal.signal(signal.SIGINT, lambda *_: (print(time.monotonic() - began), sys.exit(0)))
      time.sleep(2.0)
      with open({str(tmp_path / "metrics.jsonl")!r}, "w") as f:
        f.write(json.dumps({{"agent_step": 128, "updates": 1}}) + "\\n")
      began = time.monotonic()
      time.sleep(60)
  """)
  assert not updates_began(str(tmp_path))
  status, out = run_command([sys.executable, "-c", child], 30, str(tmp_path / "log"),
                            sigint_after_s=1.5, clock_starts=lambda: updates_began(str(tmp_path)))
  assert status == 0, (tmp_path / "log").read_text()
  assert 1.5 <= float(out) < 25
  assert updates_began(str(tmp_path))


def test_official_code_runs_without_the_flags_wm_jax_added(monkeypatch):
  """An official JAX code runs another jaxlib, which stops on flags it does not know."""
  from jaxlib import version
  added = xla_cpu.flags_for(version.__version__)
  if added is None:
    pytest.skip("no XLA:CPU flags for this jaxlib")
  monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 {added}")
  assert official_env()["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=default")
  assert official_env()["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=default"
