r"""Does a detector find the same objects after a benign copy, and does it cover the edits?

    .venv/bin/python benchmarks/detector_stability.py --records DIR [--split train]
        [--detector classical] [--detector_option proposals=mser ...]

Replays the views and edits of a demo records folder (`oscar_demo`, through the builder that
made it: `OscarDemoMaker.view_of` and `edit_of`) through a detector, by default the one the
records were made with, and prints one Markdown row:

* stability, over each original's benign views whose geometry maps back exactly (JPEG,
  resizing, noise, sharpness, colour and flips; views that were rotated or padded are
  skipped): the share of views with as many objects as the original, and the box IoU
  agreement, the mean over the original's boxes of the best IoU with a box of the view
  (recall side) and over the view's boxes (precision side);
* coverage, over the manipulated versions: the share of the edit's changed pixels that lie
  inside some detected box, per kind of edit.

The hash can only see an edit through the object stream where a box covers it, and only
learns anything from the object stream where the same objects come back after a benign copy.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oscar_jax.evaluation.table6 import builder_items  # noqa: E402
from preprocessing import detect, manipulations  # noqa: E402
from preprocessing.build import parse_options  # noqa: E402

# Transforms whose effect on box coordinates (normalised to the image) is the identity or a
# flip; anything else in a view's description skips it.
MAPPABLE = {"compress", "resize", "gaussian_noise", "sharpness", "color", "flip"}


def normalised_boxes(dets: detect.Detections, transforms: str = "") -> np.ndarray:
    """[K, 4] xyxy boxes in [0, 1], with the view's flips undone."""
    height, width = dets.image_size
    boxes = dets.boxes.astype(np.float64) / [width, height, width, height]
    if "flip(axis=1)" in transforms:
        boxes[:, [0, 2]] = 1 - boxes[:, [2, 0]]
    if "flip(axis=0)" in transforms:
        boxes[:, [1, 3]] = 1 - boxes[:, [3, 1]]
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[K, 4] x [L, 4] xyxy -> [K, L] IoU."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def stability(items, maker, detector) -> dict[str, float]:
    views = collections.defaultdict(dict)
    for item in items:
        if item.spec["variant"] == 0:
            views[item.spec["identity"]][item.spec["view"]] = item
    same_count, recall, precision, objects = [], [], [], []
    for by_view in views.values():
        if 0 not in by_view:
            continue
        image, masks, _, name = maker.view_of(by_view[0])
        reference = normalised_boxes(detector(image, name=name, gt_masks=masks))
        objects.append(len(reference))
        for number, item in by_view.items():
            if number == 0:
                continue
            image, masks, transforms, name = maker.view_of(item)
            if not set(re.findall(r"(\w+)\(", transforms)) <= MAPPABLE:
                continue
            boxes = normalised_boxes(detector(image, name=name, gt_masks=masks), transforms)
            same_count.append(len(boxes) == len(reference))
            if len(boxes) and len(reference):
                iou = box_iou(reference, boxes)
                recall.append(iou.max(axis=1).mean())
                precision.append(iou.max(axis=0).mean())
            elif len(boxes) or len(reference):
                recall.append(0.0)
                precision.append(0.0)
    if not same_count:
        raise SystemExit("no benign view with a geometry that maps back: nothing to compare")
    return {"views": len(same_count), "objects": float(np.mean(objects)),
            "same_count": float(np.mean(same_count)), "recall": float(np.mean(recall)),
            "precision": float(np.mean(precision))}


def coverage(items, maker, detector) -> dict[str, float]:
    covered = collections.defaultdict(list)
    for item in items:
        spec = item.spec
        if spec["variant"] == 0 or spec["view"] != 0:
            continue
        edited = maker.edit_of(spec)
        inside = np.zeros_like(edited.changed)
        found = detector(edited.image, name=item.key, gt_masks=edited.masks)
        for x0, y0, x1, y1 in np.round(found.boxes).astype(int):
            inside[y0:y1, x0:x1] = True
        changed = max(int(edited.changed.sum()), 1)
        kind = edited.description.split("(")[0]
        covered[kind].append((inside & edited.changed).sum() / changed)
    return {kind: float(np.mean(covered[kind])) for kind in manipulations.MANIPULATIONS
            if covered[kind]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", required=True, help="a built oscar_demo records folder")
    parser.add_argument("--split", default="train", help="records split (default: train)")
    parser.add_argument("--detector", help="detector backend (default: the records' own)")
    parser.add_argument("--detector_option", action="append", default=[], metavar="KEY=VALUE",
                        help="a detector option (default: the records' own options)")
    args = parser.parse_args()
    made = builder_items(args.records)
    if made is None or not hasattr(made[1], "edit_of"):
        raise SystemExit(f"{args.records} holds no oscar_demo records: only the demo can "
                         "replay its views and edits")
    items, maker = made
    if args.split not in items:
        raise SystemExit(f"no split {args.split!r}; the records have {', '.join(items)}")
    try:
        if args.detector or args.detector_option:
            # The records' maker with another detector fills in the same defaults as a build.
            config = maker.config
            options = {} if args.detector else dict(config.detector_options)
            options.update(parse_options(args.detector_option, typed=True))
            maker = type(maker)(dataclasses.replace(
                config, detector=args.detector or config.detector,
                detector_options=tuple(sorted(options.items()))))
        detector = maker.detector
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    found = stability(items[args.split], maker, detector)
    covers = coverage(items[args.split], maker, detector)
    label = ", ".join(f"{field.name}={getattr(detector, field.name)}"
                      for field in dataclasses.fields(detector) if not field.name.startswith("_"))
    print("| detector | views | objects | same count | box IoU recall / precision | "
          + " | ".join(f"{kind} covered" for kind in covers) + " |")
    print("|---|---|---|---|---|" + "---|" * len(covers))
    print(f"| {type(detector).__name__} ({label}) | {found['views']} | {found['objects']:.2f} | "
          f"{found['same_count']:.2f} | {found['recall']:.3f} / {found['precision']:.3f} | "
          + " | ".join(f"{value:.2f}" for value in covers.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
