"""Long fuzzing run of the image loader and the store reader (tests/test_fuzz.py), with random
(not derandomized) examples: python bench/fuzz.py [EXAMPLES]   (default 5000 per target).
The store targets mutate bytes of plain stores and of stores whose datasets were replaced by
external storage, external and soft links and virtual datasets."""
import os
import subprocess
import sys

if __name__ == "__main__":
    examples = sys.argv[1] if len(sys.argv) > 1 else "5000"
    env = dict(os.environ, HASHAE_FUZZ_EXAMPLES=examples, HASHAE_FUZZ_RANDOM="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              os.path.join(root, "tests", "test_fuzz.py")], env=env, cwd=root))
