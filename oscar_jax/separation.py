r"""How well codes tell benign views from manipulated versions of the same original.

    python -m oscar_jax.separation --workdir runs/demo [--split test]

For each original (identity) of a split, the reference is its untransformed original
(variant 0, view 0). Every benign view of the original (variant 0, view >= 1) is paired with
every record of its manipulated versions (variant >= 1, any view); a pair scores 1 when the
benign view is nearer the reference in Hamming distance than the manipulated record, 1/2 on a
tie (ties are never counted in a method's favour) and 0 otherwise. The separation is the mean
score per identity, averaged over identities: 0.5 is chance, 1.0 perfect. The same number is
computed for the trained model and for pHash on the same global views, and written to
`<workdir>/separation.json`.
"""

from __future__ import annotations

import json
import os
import sys

import imagehash
import numpy as np
from absl import app, flags
from PIL import Image
from tqdm import tqdm

import oscar_jax.hash as image_hash
from oscar_jax import hashing, input_pipeline

EVAL_BATCH = image_hash.EVAL_BATCH


def separation(distance: np.ndarray, identity: np.ndarray, variant: np.ndarray,
               view: np.ndarray) -> dict[str, float]:
    """The benign-vs-manipulated separation of the module docstring.

    Args:
      distance: [R, R] distances between all records (only the references' rows are read).
      identity, variant, view: int [R] labels of the records.

    Returns:
      {'separation', 'benign_distance', 'manipulated_distance', 'identities'}: the score, the
      mean distances of benign views and of manipulated records to their reference, and the
      number of identities that had a reference, a benign view and a manipulated record.
    """
    scores, benign_mean, manipulated_mean = [], [], []
    for ident in np.unique(identity):
        mine = identity == ident
        reference = np.flatnonzero(mine & (variant == 0) & (view == 0))
        benign = np.flatnonzero(mine & (variant == 0) & (view != 0))
        manipulated = np.flatnonzero(mine & (variant != 0))
        if len(reference) == 0 or len(benign) == 0 or len(manipulated) == 0:
            continue
        d_benign = distance[reference[0], benign].astype(np.float64)
        d_manipulated = distance[reference[0], manipulated].astype(np.float64)
        nearer = d_benign[:, None] < d_manipulated[None, :]
        tied = d_benign[:, None] == d_manipulated[None, :]
        scores.append(np.mean(nearer + 0.5 * tied))
        benign_mean.append(d_benign.mean())
        manipulated_mean.append(d_manipulated.mean())
    if not scores:
        raise ValueError("no identity has an original, a benign view and a manipulated version")
    return {
        "separation": float(np.mean(scores)),
        "benign_distance": float(np.mean(benign_mean)),
        "manipulated_distance": float(np.mean(manipulated_mean)),
        "identities": len(scores),
    }


def phash_bits(images: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] -> packed 64-bit pHash codes uint8 [B, 8]."""
    bits = [imagehash.phash(Image.fromarray(im)).hash.reshape(-1) for im in images]
    return np.packbits(np.asarray(bits, bool), axis=-1)


def evaluate(workdir: str, split: str | None = None) -> dict:
    """Codes of the model and of pHash for every record of a split, and their separation."""
    from oscar_jax import train

    config = train.load_config(workdir)
    split = split or config.eval_split
    directory = input_pipeline.records_dir(config.dataset, config.dataset_config,
                                           config.data_dir)
    encode, _ = image_hash.model_encoder(workdir)
    codes = {"oscar": [], "phash": []}
    labels = {"identity": [], "variant": [], "view": []}
    total = input_pipeline.open_source(directory, split).__len__()
    with tqdm(total=total, desc=f"hashing {split}", unit="image", file=sys.stdout) as bar:
        for batch in input_pipeline.read_split(directory, split, batch_size=EVAL_BATCH):
            codes["oscar"].append(encode(batch))
            codes["phash"].append(phash_bits(batch["image"]))
            for name in labels:
                labels[name].append(batch[name])
            bar.update(len(batch["image"]))
    labels = {k: np.concatenate(v) for k, v in labels.items()}
    result = {"workdir": workdir, "split": split, "records": total, "methods": {}}
    for method, parts in codes.items():
        packed = np.concatenate(parts)
        distance = hashing.hamming_distance(packed, packed)
        scores = separation(distance, labels["identity"], labels["variant"], labels["view"])
        scores["bits"] = int(packed.shape[1] * 8)
        result["methods"][method] = scores
    with open(os.path.join(workdir, "separation.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def format_table(result: dict) -> str:
    lines = [
        f"Benign views vs manipulated versions, {result['split']} split "
        f"({result['records']} records, "
        f"{next(iter(result['methods'].values()))['identities']} originals)",
        "",
        "| method | bits | P(benign view nearer than manipulated) | mean distance: benign "
        "| manipulated |",
        "|---|---|---|---|---|",
    ]
    for method, s in result["methods"].items():
        lines.append(f"| {method} | {s['bits']} | {s['separation']:.3f} | "
                     f"{s['benign_distance']:.2f} | {s['manipulated_distance']:.2f} |")
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training workdir (holds config.json, checkpoints/).")
    flags.DEFINE_string("split", None, "Split to evaluate (default: the config's eval_split).")


def main(argv):
    del argv
    if FLAGS.workdir is None:
        raise app.UsageError("give --workdir DIR of a trained model")
    print(format_table(evaluate(FLAGS.workdir, FLAGS.split)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
