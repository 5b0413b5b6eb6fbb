r"""CNN pretraining (paper section 3.5): one ResNet50 on the whole image, trained with SimCLR+;
its weights then initialise both fv and FG of the full model (`--config.init_from`).

    python -m oscar_jax.train --config configs/pretrain.py --workdir runs/pretrain
"""

from configs import common


def get_config(arg: str | None = None):
    del arg
    config = common.get_base_config()
    config.dataset = "psbattles24k"  # the paper's training set
    config.model.use_objects = False  # a single CNN on the global view (Table 3, F)
    config.learning_rate = 1e-3  # paper: 1e-3 in pretraining
    config.total_steps = 50_000  # optimisation steps
    config.report_at_end = False  # the report is for the full model
    return config
