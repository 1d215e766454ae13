"""One decode path: training samples, encoding workers and queries turn a file into the same
model input, whatever the model's channel count."""
import numpy as np
import pytest
from PIL import Image

from conftest import SMALL
from hashae import Collection, HasherConfig, load_image
from hashae.ingest import decode_file, model_input
from hashae.sample import make_sample


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Colour shapes, plus grey copies of some of them saved as L-mode PNG and as grey JPEG,
    and colour JPEGs: the files a one-channel model must see the same way on every path."""
    d = tmp_path_factory.mktemp("mixed") / "mixed"
    paths = make_sample(str(d), per_class=5, seed=2)
    for i, p in enumerate(paths[::3]):
        img = Image.open(p)
        img.convert("L").save(p[:-4] + "_grey.png")
        img.convert("L").save(p[:-4] + "_grey.jpg", quality=90)
        img.save(p[:-4] + "_colour.jpg", quality=85)
    return d


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_item_is_its_own_first_hit_at_distance_0(mixed_folder, tmp_path, channels, workers):
    store = tmp_path / f"m{channels}.h5"
    cfg = HasherConfig(bits=32, channels=channels, **dict(SMALL, epochs=2, pretrain_epochs=1))
    Collection(store).index(str(mixed_folder), config=cfg, workers=workers, progress=False)
    with Collection.open(store) as c:
        assert c.model.config.channels == channels
        paths = c.paths()
        files = [str(mixed_folder / p) for p in paths]
        # the stored code of every item is the code its file gets as a query
        np.testing.assert_array_equal(c.encode_files(files), c.codes)
        for f, r in zip(paths, c.query(files, k=3)):
            assert (r["hits"][0]["path"], r["hits"][0]["distance"]) == (f, 0)


def test_model_input_is_pillows_luminance_of_the_rgb_square(mixed_folder):
    files = sorted(mixed_folder.rglob("*.*"))[:12]
    for f in files:
        rgb = decode_file(f, 16).rgb
        grey = model_input(rgb, 1)
        want = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
        np.testing.assert_array_equal(grey, want)
        np.testing.assert_array_equal(load_image(f, 16, channels=1), grey)
        np.testing.assert_array_equal(load_image(f, 16, channels=3), rgb)
