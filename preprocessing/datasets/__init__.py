"""TFDS builders of scene-graph records: oscar_demo, psbattles24k, distractors."""
