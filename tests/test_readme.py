"""The README's Python example runs as written, in a fresh directory whose home holds a
photo folder (the built-in sample) and a query image."""
import os
import re
import shutil
import subprocess
import sys

from hashae.sample import make_sample

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_examples() -> list:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_python_example_runs(tmp_path):
    (example,) = python_examples()
    home = tmp_path / "home"
    photos = make_sample(str(home / "photos"), per_class=6, seed=3)
    shutil.copy(photos[0], tmp_path / "query.jpg")  # a PNG under another name, as users do
    script = example + "\nprint('README example ok', len(coll), coll.codes.shape, len(hits), hits[0].distance)\n"
    env = dict(os.environ, HOME=str(home))
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "README example ok 36 (36, 8) 10 0" in r.stdout, r.stdout
    assert (tmp_path / "indexes" / "photos.h5").exists() and (tmp_path / "model.h5").exists()
