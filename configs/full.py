r"""The paper's OSCAR-Net: ResNet50 streams, 6-layer Transformers, 64 bits, SimCLR+.

    python -m oscar_jax.train --config configs/pretrain.py --workdir runs/pretrain
    python -m oscar_jax.train --config configs/full.py --workdir runs/full \
        --config.init_from=runs/pretrain

Records first: python -m preprocessing.build --dataset psbattles24k --manual_dir DIR.
`configs/full.py:runlocal` keeps the model but shrinks inputs and batch to check on a CPU
that everything compiles and steps (synthetic inputs, no records needed).
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, runlocal=False)
    config = common.get_base_config()
    config.dataset = "psbattles24k"  # the paper's training set
    config.learning_rate = 1e-4  # paper: 1e-4 after CNN pretraining
    config.total_steps = 100_000  # optimisation steps of the main phase
    if args.runlocal:
        config.synthetic_data = True  # no records needed
        config.synthetic.max_objects = 3  # a few nodes per image
        config.synthetic.crop_size = 32  # small crops
        config.synthetic.global_size = 64  # small global view
        config.originals_per_batch = 2  # one original per fake device
        config.views_per_variant = 1  # one view each: 4 images per step
        config.total_steps = 1  # compile and run one step
        config.log_every = 1  # log that step
        config.checkpoint_every = 1  # and checkpoint it
        config.report_at_end = False  # no records to report on
    return config
