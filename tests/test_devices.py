"""One device set per parallel sweep job (labkit.run.devices): the allocation, the check before any job, the lease
each job takes; on the CPU, with the device count given."""
import subprocess
import sys

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from labkit.core.errors import ConfigError
from labkit.run import devices
from labkit.run.devices import DeviceSets, allocate, lease, parallel_jobs

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def _hydra(n_jobs=2, launcher=JOBLIB, sweeper_jobs=None):
    h = {"launcher": {"_target_": launcher, "n_jobs": n_jobs}, "sweeper": {}}
    if sweeper_jobs is not None:
        h["sweeper"]["n_jobs"] = sweeper_jobs
    return OmegaConf.create(h)


def _cfg(accelerator="gpu", devices_per_job=None):
    return OmegaConf.create({"trainer": {"accelerator": accelerator, "devices": "auto"},
                             "devices_per_job": devices_per_job})


@pytest.mark.parametrize("n, k, per, expected", [
    (4, 2, None, [(0, 1), (2, 3)]),
    (8, 4, None, [(0, 1), (2, 3), (4, 5), (6, 7)]),
    (5, 2, None, [(0, 1), (2, 3)]),  # the fifth stays idle: never shared
    (3, 3, None, [(0,), (1,), (2,)]),
    (8, 2, 1, [(0,), (1,)]),
    (8, 3, 2, [(0, 1), (2, 3), (4, 5)]),
])
def test_disjoint_sets(n, k, per, expected):
    sets = allocate(n, k, per)
    assert sets == expected
    flat = [d for s in sets for d in s]
    assert len(flat) == len(set(flat)) and all(0 <= d < n for d in flat)


@pytest.mark.parametrize("n, k, per", [(2, 4, None), (4, 2, 3), (0, 2, None), (4, 5, 1)])
def test_too_many_jobs_for_the_devices_is_refused(n, k, per):
    with pytest.raises(ConfigError) as e:
        allocate(n, k, per)
    text = str(e.value)
    assert f"this machine has {n}" in text and "hydra.launcher.n_jobs=" in text and "nothing was started" in text


@pytest.mark.parametrize("per", [0, -1, True])
def test_devices_per_job_must_be_a_positive_count(per):
    with pytest.raises(ConfigError, match="devices_per_job"):
        allocate(4, 2, per)


def test_parallel_jobs_of_each_launcher(monkeypatch):
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 6)
    assert parallel_jobs(_hydra(3)) == 3
    assert parallel_jobs(_hydra(-1)) == 6 and parallel_jobs(_hydra(-2)) == 5  # joblib's negative counts
    assert parallel_jobs(_hydra(4, sweeper_jobs=2)) == 2  # the Optuna sweeper's batch is smaller
    assert parallel_jobs(_hydra(2, launcher="hydra._internal.core_plugins.basic_launcher.BasicLauncher")) == 1
    assert parallel_jobs(OmegaConf.create({})) == 1


def test_nothing_divided_on_the_cpu_or_one_job_at_a_time():
    assert devices.device_sets(_cfg("cpu"), _hydra(2), count=4) is None
    assert devices.device_sets(_cfg("auto"), _hydra(2), count=0) is None  # auto on a machine without GPUs
    assert devices.device_sets(_cfg("gpu"), _hydra(1), count=4) is None
    assert devices.device_sets(_cfg("auto"), _hydra(2), count=4) == [(0, 1), (2, 3)]
    assert devices.device_sets(_cfg("cuda", 1), _hydra(2), count=4) == [(0,), (1,)]


def test_the_callback_refuses_the_sweep_before_any_job():
    config = OmegaConf.merge(_cfg("gpu"), {"hydra": _hydra(4)})
    with pytest.raises(ConfigError, match="4 jobs at a time"):
        DeviceSets(count=2).check(config)
    with pytest.raises(SystemExit):  # Hydra would only warn about an exception: the sweep stops here
        DeviceSets(count=2).on_multirun_start(config)
    assert DeviceSets(count=4).check(config) == [(0,), (1,), (2,), (3,)]  # one GPU each: fine


def test_each_running_job_holds_its_own_set_until_it_ends(tmp_path):
    """joblib starts job 2 when either job 0 or job 1 ends: it takes whichever set is free, never a held one."""
    hydra = _hydra(2)
    cfgs = [_cfg("gpu") for _ in range(4)]
    with lease(cfgs[0], hydra, 0, tmp_path, count=4) as a, lease(cfgs[1], hydra, 1, tmp_path, count=4) as b:
        assert (a, b) == ((0, 1), (2, 3))
        assert list(cfgs[0].trainer.devices) == [0, 1] and list(cfgs[1].trainer.devices) == [2, 3]
        with pytest.raises(ConfigError, match="held by other jobs"):
            with lease(cfgs[2], hydra, 2, tmp_path, count=4, timeout=0.2, poll=0.05):
                pass
    with lease(cfgs[0], hydra, 0, tmp_path, count=4) as a:
        with lease(cfgs[3], hydra, 2, tmp_path, count=4) as c:  # job 2's own slot (0) is held: it gets slot 1
            assert a == (0, 1) and c == (2, 3)
            assert "job 2" in (tmp_path / devices.LEASE_DIR / "slot-1.lock").read_text()
    assert cfgs[2].trainer.devices == "auto"  # a refused job's config is left as it was


def test_no_lease_on_the_cpu(tmp_path):
    cfg = _cfg("cpu")
    with lease(cfg, _hydra(2), 0, tmp_path, count=4) as ids:
        assert ids is None and cfg.trainer.devices == "auto"
    assert not (tmp_path / devices.LEASE_DIR).exists()


def test_a_sweep_with_too_many_jobs_for_its_gpus_starts_none(tmp_path):
    """The command line, end to end: the refusal is one paragraph and no job folder is made."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=4", "hydra.callbacks.device_sets.count=2", "trainer.accelerator=gpu",
                        "model=lenet,mlp", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path}"],
                       cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "error: 4 jobs at a time with 1 GPU(s) each need 4 GPUs, and this machine has 2" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "logs" / "multirun").exists()  # no job started
