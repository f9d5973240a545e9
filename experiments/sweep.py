"""Benchmark sweeps: games x seeds (x methods) runs of `experiments.train`, each in its own run
directory, with a concurrency limit and a live summary.

  python -m experiments.sweep --config=experiments/configs/<method>.py:atari100k \\
      --games=atari100k --seeds=5 --workdir=DIR [--concurrency=K] [--launcher=local|ray] \\
      [--ray_address=ADDR] [--config.x=y ...]

--config may be given several times or comma separated (one method each); --games takes
`atari100k` (the 26 games) or a comma-separated list; --seeds=N runs seeds 0..N-1. Every
`--config.x=y` override (the `=` form) is passed to each run unchanged. Run k of game G of
method M lives in DIR/M/G/seed<k> with its log in train.log there.

Resuming: a run directory with done.json is finished and skipped; any other is started with
the same train command, which resumes it from its last checkpoint (so rerunning the sweep
after a crash, a Ctrl-C or a failure finishes what is missing). Ctrl-C sends SIGTERM to the
running runs, which checkpoint and stop.

Launchers (never a home-made scheduler):
  local  a pool of subprocesses on this machine, at most --concurrency at a time (default).
         With several runs per GPU, set XLA_PYTHON_CLIENT_PREALLOCATE=false (the sweep does
         when --concurrency > 1 and it is unset) and CUDA_VISIBLE_DEVICES as needed.
  ray    submission to an existing Ray cluster (`--ray_address=auto` or host:port; `local`
         starts a private one). Each run is one Ray task asking for --ray_cpus_per_run CPUs,
         --ray_gpus_per_run GPUs and --ray_resources (JSON, e.g. '{"TPU": 4}'); Ray places
         them, --concurrency caps the runs in flight. Nodes need this repository at the same
         path and DIR on shared storage (NFS, a gcsfuse-mounted bucket); the variables
         PYTHONPATH, XLA_FLAGS, JAX_PLATFORMS, XLA_PYTHON_CLIENT_PREALLOCATE, MUJOCO_GL and
         WM_JAX_* of the submitting shell are forwarded to the runs.

On a TPU pod slice (e.g. v4-32 = 4 hosts x 4 chips):
  * Many runs that each fit one host (Atari-100k): start Ray on every host with its chips as
    a resource, `gcloud compute tpus tpu-vm ssh $TPU --worker=all --command='ray start
    --address=$HEAD:6379 --resources="{\\"TPU\\": 4}"'` (after `ray start --head` on worker 0),
    then on worker 0: `python -m experiments.sweep ... --workdir=/mnt/shared/runs
    --launcher=ray --ray_address=auto --ray_resources='{"TPU": 4}' --ray_cpus_per_run=8`.
    Ray runs one run per host; each run is data-parallel over its host's 4 chips.
  * Runs that span the whole slice: `--dry_run` prints each run's train command; start each
    on all hosts at once with `gcloud compute tpus tpu-vm ssh $TPU --worker=all
    --command="cd ~/wm_jax && WM_JAX_DISTRIBUTED=1 <command>"` (jax.distributed.initialize()
    reads the slice topology). Rerunning a command resumes it, so a loop over the printed
    commands can simply be restarted.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags

from experiments.config_files import check_config_file
from wm_jax.envs import check_task
from wm_jax.errors import UserError
from wm_jax.eval import scores

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command-line flags (called by the entry point only, so importing this
  module for its functions registers no flags)."""
  flags.DEFINE_multi_string("config", None, "Method config and variant, "
                            "experiments/configs/<method>.py:<variant>; repeat the flag "
                            "or separate with commas for several methods.")
  flags.DEFINE_string("games", "atari100k", "'atari100k' (its 26 games) or a comma-"
                      "separated list of games / tasks.")
  flags.DEFINE_integer("seeds", 1, "Number of seeds per game: seeds 0..N-1.")
  flags.DEFINE_string("workdir", None, "Sweep directory; run directories are "
                      "<workdir>/<method>/<game>/seed<k>.")
  flags.DEFINE_integer("concurrency", 1, "Runs in flight at once.")
  flags.DEFINE_enum("launcher", "local", ["local", "ray"], "Where runs execute.")
  flags.DEFINE_string("ray_address", "auto", "Ray cluster address: 'auto' (the "
                      "cluster this machine belongs to), host:port, or 'local'.")
  flags.DEFINE_float("ray_cpus_per_run", 1.0, "CPUs a run asks Ray for.")
  flags.DEFINE_float("ray_gpus_per_run", 0.0, "GPUs a run asks Ray for.")
  flags.DEFINE_string("ray_resources", "", "Custom Ray resources per run as "
                      "JSON, e.g. '{\"TPU\": 4}'.")
  flags.DEFINE_string("train_module", "experiments.train", "Module run (python "
                      "-m) for each run.")
  flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")


GAME_PRESETS = {"atari100k": scores.atari100k_games}
FORWARDED_ENV = ("PYTHONPATH", "XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                 "MUJOCO_GL")
FORWARDED_PREFIX = "WM_JAX_"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_GRACE_SECONDS = 120


@dataclasses.dataclass(frozen=True)
class Job:
  """One run of the sweep."""
  method: str
  game: str
  seed: int
  path: str
  command: tuple[str, ...]

  @property
  def name(self) -> str:
    return f"{self.method}/{self.game}/seed{self.seed}"

  @property
  def log(self) -> str:
    return os.path.join(self.path, "train.log")

  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.path, "done.json"))


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
  """(sweep argv, --config.x=y overrides to pass to every run)."""
  overrides = [a for a in argv[1:] if a.startswith("--config.")]
  for arg in overrides:
    if "=" not in arg:
      raise UserError(f"{arg}: write config overrides as --config.x=y (with '='), so the "
                      f"sweep can pass them to every run.")
  return [argv[0]] + [a for a in argv[1:] if not a.startswith("--config.")], overrides


def load_method_config(spec: str):
  """(method name, suite) of `path.py:variant`, loading the config like experiments.train."""
  check_config_file(spec)
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  return config.method, config.env.suite


def expand_games(games: str, suite: str) -> list[str]:
  """Game names of --games for one method: a preset or a list, every name checked against
  the suite (Atari: the 26 Atari-100k games) before any run starts."""
  if games in GAME_PRESETS:
    if suite != scores.ATARI_SUITE:
      raise UserError(f"--games={games} is an Atari preset but this config runs suite "
                      f"{suite!r}; list its tasks instead, e.g. --games=cheetah_run,walker_walk.")
    return list(GAME_PRESETS[games]())
  names = [g.strip() for g in games.split(",") if g.strip()]
  if not names:
    raise UserError("--games is empty; give 'atari100k' or a comma-separated list.")
  if suite == scores.ATARI_SUITE:
    return [scores.canonical_game(g) for g in names]
  for name in names:
    check_task(suite, name)
  return names


def make_jobs(config_specs: list[str], games: str, seeds: int, workdir: str,
              overrides: list[str], train_module: str) -> list[Job]:
  """All runs of the sweep, methods x games x seeds, in that order."""
  if seeds < 1:
    raise UserError(f"--seeds={seeds} must be at least 1.")
  jobs, seen = [], {}
  for spec in config_specs:
    method, suite = load_method_config(spec)
    if method in seen:
      raise UserError(f"--config={spec} and --config={seen[method]} both write runs of method "
                      f"{method!r} into {workdir}/{method}; sweep them into separate --workdir.")
    seen[method] = spec
    for game in expand_games(games, suite):
      for seed in range(seeds):
        path = os.path.join(workdir, method, game, f"seed{seed}")
        command = (sys.executable, "-m", train_module, f"--config={spec}",
                   f"--workdir={path}", f"--config.env.task={game}", f"--config.seed={seed}",
                   *overrides)
        jobs.append(Job(method, game, seed, path, command))
  return jobs


def run_env(concurrency: int) -> dict[str, str]:
  """Variables forwarded to every run (the whole environment for local runs is inherited)."""
  env = {k: v for k, v in os.environ.items()
         if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIX)}
  if concurrency > 1:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several runs may share a GPU
  return env


def last_line(path: str) -> str:
  """The last non-empty line of a log (progress bars' carriage returns split too)."""
  try:
    with open(path, errors="replace") as f:
      text = f.read()[-4000:]
  except OSError:
    return "(no log)"
  lines = [l.strip() for l in text.replace("\r", "\n").split("\n") if l.strip()]
  return lines[-1] if lines else "(empty log)"


class Summary:
  """Counts of runs done / running / failed / pending, printed as one line on every change."""

  def __init__(self, jobs: list[Job], out=sys.stdout):
    self.total = len(jobs)
    self.skipped = sum(job.finished() for job in jobs)
    self.done = self.skipped
    self.running = 0
    self.failed: list[tuple[Job, str]] = []
    self.start = time.time()
    self.out = out

  def line(self) -> str:
    elapsed = int(time.time() - self.start)
    pending = self.total - self.done - self.running - len(self.failed)
    skipped = f" ({self.skipped} already finished)" if self.skipped else ""
    return (f"[sweep {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}] "
            f"{self.done}/{self.total} done{skipped}, {self.running} running, "
            f"{len(self.failed)} failed, {pending} pending")

  def show(self) -> None:
    print(self.line(), file=self.out, flush=True)

  def started(self, job: Job) -> None:
    self.running += 1
    self.show()

  def finished(self, job: Job, returncode: int, done: bool) -> None:
    self.running -= 1
    if returncode == 0 and done:
      self.done += 1
    else:
      why = (f"exit {returncode}" if returncode else "stopped before finishing")
      self.failed.append((job, why))
      print(f"[sweep] FAILED {job.name} ({why}): {last_line(job.log)}\n"
            f"        log: {job.log}", file=self.out, flush=True)
    self.show()


def _open_log(job: Job):
  os.makedirs(job.path, exist_ok=True)
  log = open(job.log, "a")
  log.write(f"\n$ {' '.join(job.command)}\n")
  log.flush()
  return log


def launch_local(jobs: list[Job], concurrency: int, summary: Summary) -> None:
  """Runs the jobs as subprocesses, at most `concurrency` at once; Ctrl-C stops them
  gracefully (SIGTERM: they checkpoint) and re-raises."""
  env = {**os.environ, **run_env(concurrency)}
  pending = collections.deque(jobs)
  running: dict[subprocess.Popen, tuple[Job, object]] = {}
  try:
    while pending or running:
      while pending and len(running) < concurrency:
        job = pending.popleft()
        log = _open_log(job)
        proc = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                env=env, start_new_session=True)
        running[proc] = (job, log)
        summary.started(job)
      for proc in [p for p in running if p.poll() is not None]:
        job, log = running.pop(proc)
        log.close()
        summary.finished(job, proc.returncode, job.finished())
      time.sleep(0.2)
  except KeyboardInterrupt:
    print(f"[sweep] stopping {len(running)} running run(s) (SIGTERM: they checkpoint)...",
          file=summary.out, flush=True)
    for proc in running:
      os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    for proc, (_, log) in running.items():
      try:
        proc.wait(timeout=max(1.0, deadline - time.time()))
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
      log.close()
    raise


def _ray_run(command: tuple[str, ...], log_path: str, env: dict, cwd: str) -> tuple[int, bool]:
  """Body of one Ray task: runs the train command on the node, returns (exit code, done)."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                           env={**os.environ, **env})
  return code, os.path.exists(os.path.join(os.path.dirname(log_path), "done.json"))


def launch_ray(jobs: list[Job], concurrency: int, summary: Summary, address: str,
               cpus: float, gpus: float, resources: dict) -> None:
  """Submits each job as a Ray task to the cluster at `address` (or the one this process
  already joined), keeping at most `concurrency` in flight; Ctrl-C cancels them."""
  import ray  # only this launcher needs the `cluster` extra
  if not ray.is_initialized():
    ray.init(address=address, log_to_driver=False)
  task = ray.remote(num_cpus=cpus, num_gpus=gpus, resources=resources or None,
                    max_retries=0)(_ray_run)
  env = run_env(concurrency)
  pending = collections.deque(jobs)
  in_flight = {}
  try:
    while pending or in_flight:
      while pending and len(in_flight) < concurrency:
        job = pending.popleft()
        in_flight[task.remote(job.command, job.log, env, REPO_ROOT)] = job
        summary.started(job)
      ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
      for ref in ready:
        job = in_flight.pop(ref)
        try:
          code, done = ray.get(ref)
        except ray.exceptions.RayError as e:
          code, done = 1, False
          print(f"[sweep] Ray could not run {job.name}: {type(e).__name__}", file=summary.out)
        summary.finished(job, code, done)
  except KeyboardInterrupt:
    for ref in in_flight:
      ray.cancel(ref)
    raise


def main(overrides: list[str]) -> None:
  specs = [s for arg in FLAGS.config for s in arg.split(",") if s]
  try:
    jobs = make_jobs(specs, FLAGS.games, FLAGS.seeds, os.path.abspath(FLAGS.workdir),
                     overrides, FLAGS.train_module)
    resources = json.loads(FLAGS.ray_resources) if FLAGS.ray_resources else {}
  except UserError as e:
    sys.exit(f"error: {e}")
  except json.JSONDecodeError:
    sys.exit(f"error: --ray_resources={FLAGS.ray_resources} is not JSON; write it like "
             f"'{{\"TPU\": 4}}'.")
  if FLAGS.concurrency < 1:
    sys.exit(f"error: --concurrency={FLAGS.concurrency} must be at least 1.")
  if FLAGS.dry_run:
    for job in jobs:
      print(" ".join(job.command))
    return
  summary = Summary(jobs)
  todo = [job for job in jobs if not job.finished()]
  games = len({job.game for job in jobs})
  print(f"[sweep] {len(jobs)} runs ({len(specs)} method(s) x {games} games x {FLAGS.seeds} "
        f"seeds) in {FLAGS.workdir}; {len(todo)} to run, {FLAGS.concurrency} at a time "
        f"({FLAGS.launcher}).", flush=True)
  summary.show()
  try:
    if FLAGS.launcher == "local":
      launch_local(todo, FLAGS.concurrency, summary)
    else:
      launch_ray(todo, FLAGS.concurrency, summary, FLAGS.ray_address, FLAGS.ray_cpus_per_run,
                 FLAGS.ray_gpus_per_run, resources)
  except KeyboardInterrupt:
    sys.exit(f"[sweep] interrupted: {summary.line()}. Rerun the same command to resume.")
  if summary.failed:
    sys.exit(f"[sweep] finished with {len(summary.failed)} failed run(s) (logs above); rerun "
             f"the same command to retry them: finished runs are skipped.")
  print(f"[sweep] all {summary.total} runs finished; report them with `python -m "
        f"benchmarks.report --runs={FLAGS.workdir} --out=<dir>`.")


def _parse(argv: list[str]) -> list[str]:
  """absl parses the sweep's own flags; the --config.x=y overrides go to main."""
  try:
    sweep_argv, overrides = split_passthrough(argv)
  except UserError as e:
    sys.exit(f"error: {e}")
  FLAGS(sweep_argv)
  return overrides


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=_parse)
