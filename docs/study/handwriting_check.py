"""Does an MNIST model read handwriting from another collection? (issue 12's `xpnet predict` check)

No other digit collection is on this machine and there is no internet, so this uses the one
packaged with scikit-learn: ``sklearn.datasets.load_digits`` — 1,797 digits written by 43
people (UCI "Optical Recognition of Handwritten Digits", Alpaydin & Kaynak), scanned and
reduced to 8×8 blocks of 0..16 ink counts. They are real handwriting, but not MNIST's writers
nor its scanning. Each is upsampled (bicubic) to 64×64, written as a PNG, and classified by
``xpnet predict`` exactly as a user's image would be (crop, 20×20 box, centre of mass).
Imperfect: 8×8 is far coarser than MNIST's 20×20 box, so strokes come back blurred.

    python docs/study/handwriting_check.py MODEL.npz [MODEL.npz ...]
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main(models):
    digits = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, img in enumerate(digits.images):
            pixels = (img / 16.0 * 255).astype(np.uint8)  # light ink on black, like MNIST
            path = Path(tmp) / f"d{i:04d}.png"
            Image.fromarray(pixels).resize((64, 64), Image.BICUBIC).save(path)
            paths.append(str(path))
        for model in models:
            proc = subprocess.run([sys.executable, "-m", "xpnet", "predict", model, *paths, "--json"],
                                  capture_output=True, text=True, check=True)
            preds = [json.loads(line)["predictions"][0]["label"] for line in proc.stdout.splitlines()]
            correct = np.array(preds) == digits.target
            per_class = " ".join(f"{d}:{correct[digits.target == d].mean() * 100:.0f}%" for d in range(10))
            print(f"{model}: {correct.mean() * 100:.1f}% of {len(preds)} correct ({per_class})")


if __name__ == "__main__":
    main(sys.argv[1:])
