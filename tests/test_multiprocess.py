"""The data-parallel update across two JAX processes (jax.distributed on localhost, gloo between
CPU processes, 2 fake devices each) equals the one-device update: the multi-host path of
wm_jax/parallel.py that a TPU pod uses."""

import os
import socket
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROCESS = textwrap.dedent("""
    import os, sys
    root, index, port = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
                      JAX_COORDINATOR_ADDRESS=f"localhost:{port}", WM_JAX_NUM_PROCESSES="2",
                      WM_JAX_PROCESS_ID=index)
    sys.path.insert(0, root); sys.path.insert(0, os.path.join(root, "tests"))
    import jax, numpy as np
    from experiments.configs import dreamerv3
    from test_dreamer_agent import VEC, replay_batch
    from wm_jax import parallel
    from wm_jax.agents import make_agent
    from wm_jax.errors import RunConfigError
    from wm_jax.train import train
    parallel.maybe_initialize_distributed()
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    config = dreamerv3.get_config("debug")
    agent = make_agent("dreamerv3", config.agent, VEC)
    state, batch = agent.init(jax.random.PRNGKey(0)), replay_batch(VEC, B=8)
    key = jax.random.PRNGKey(1)
    mesh = parallel.make_mesh()
    rows = slice(4 * jax.process_index(), 4 * jax.process_index() + 4)   # this process's half
    multi = parallel.data_parallel(agent.update, mesh)(
        parallel.replicate(state, mesh),
        parallel.shard_batch(jax.tree.map(lambda x: np.asarray(x)[rows], batch), mesh),
        parallel.replicate(key, mesh))
    assert len(jax.tree.leaves(multi)[0].sharding.device_set) == 4
    one = jax.local_devices()[0]
    single = jax.jit(agent.update)(*jax.device_put((state, batch, key), one))
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5)
    try:
      train(config, os.path.join(root, "never_written"))
      raise AssertionError("the loop ran across processes")
    except RunConfigError as e:
      assert "runs in one process, not 2" in str(e)
    print("OK", jax.process_index(), float(multi[1]["model_loss"]), flush=True)
    jax.distributed.shutdown()
""")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_process_update_equals_one_device_update():
  port = str(free_port())
  procs = [subprocess.Popen([sys.executable, "-c", PROCESS, ROOT, str(i), port],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"OK {i}" in out, err[-3000:]
  assert not os.path.exists(os.path.join(ROOT, "never_written"))
