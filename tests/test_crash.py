"""Crash safety as a property: SIGKILL `index` at random moments (training, encoding, writing),
then check that the store still opens (old or new state, never torn) and that the next run ends
with exactly the items and codes of an uninterrupted run."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import store_state
from hashae.sample import make_sample

TRIALS = int(os.environ.get("HASHAE_CRASH_TRIALS", "20"))

SCRIPT = """
import sys
from hashae import Collection, HasherConfig
cfg = HasherConfig(bits=16, image_size=16, hidden=(64, 32), epochs=3, pretrain_epochs=1, min_steps=120, batch_size=16)
Collection(sys.argv[1]).index(sys.argv[2], config=cfg, workers=0, progress=False, segment=4)
"""


def _run(store, folder):
    subprocess.run([sys.executable, "-c", SCRIPT, str(store), str(folder)], check=True, timeout=300)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    full, part = root / "full", root / "part"
    make_sample(str(full), per_class=10, size=24, seed=3)
    shutil.copytree(full, part)
    for cls in ("ring", "cross"):  # the incremental case: these arrive later
        shutil.rmtree(part / cls)
    return root, full, part


@pytest.fixture(scope="module")
def references(folders):
    root, full, part = folders
    fresh = root / "ref-fresh.h5"
    t0 = time.monotonic()
    _run(fresh, full)
    fresh_seconds = time.monotonic() - t0
    base = root / "ref-base.h5"
    _run(base, part)
    incremental = root / "ref-incremental.h5"
    shutil.copy(base, incremental)
    shutil.copytree(full, root / "grown")
    t0 = time.monotonic()
    _run(incremental, root / "grown")
    return dict(fresh=(store_state(fresh), fresh_seconds), base=(base, store_state(base)),
                incremental=(store_state(incremental), time.monotonic() - t0))


def test_sigkill_at_random_moments(folders, references, tmp_path):
    root, full, part = folders
    rng = np.random.default_rng(2024)
    kinds = []
    for trial in range(TRIALS):
        incremental = trial % 2 == 1
        store = tmp_path / f"t{trial}.h5"
        if incremental:
            folder = root / "grown"
            shutil.copy(references["base"][0], store)
            expected, seconds = references["incremental"]
        else:
            folder = full
            expected, seconds = references["fresh"]
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(store), str(folder)])
        time.sleep(rng.uniform(0.2, seconds * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kinds.append("killed" if proc.returncode == -signal.SIGKILL else "finished")
        if os.path.exists(store):  # never torn: the old state or the new one, complete
            state = store_state(store)
            olds = [references["base"][1]] if incremental else []
            assert any(state[0] == s[0] and np.array_equal(state[1], s[1]) and np.array_equal(state[2], s[2])
                       for s in olds + [expected])
        else:
            assert not incremental
        _run(store, folder)
        paths, codes, phash = store_state(store)
        assert paths == expected[0], f"trial {trial}"
        np.testing.assert_array_equal(codes, expected[1])
        np.testing.assert_array_equal(phash, expected[2])
        assert not os.path.exists(f"{store}.journal")
    assert kinds.count("killed") >= TRIALS // 2, kinds
