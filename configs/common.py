"""Shared defaults of every training config, and the `get_config(arg)` argument parser.

A config file is `configs/X.py` with `get_config(arg: str | None) -> ConfigDict`; `arg` is
what follows the colon in `--config configs/X.py:arg`, a comma-separated list of flags
and `key=value` pairs read by `parse_arg`.
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults):
    """'runlocal,bits=32' with defaults {runlocal: False, bits: 64} -> ConfigDict.

    A bare name sets a boolean default to True; `key=value` is cast to the default's type.
    """
    values = ml_collections.ConfigDict(dict(defaults))
    for item in filter(None, (arg or "").split(",")):
        key, equals, text = item.partition("=")
        if key not in defaults:
            raise ValueError(
                f"unknown config argument {key!r}; this config takes {sorted(defaults)}")
        default = defaults[key]
        if not equals:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {key!r} needs a value: {key}=...")
            values[key] = True
        elif isinstance(default, bool):
            values[key] = text.lower() in ("1", "true", "yes")
        else:
            values[key] = type(default)(text)
    return values


def model_config() -> ml_collections.ConfigDict:
    """The paper's OscarNet (fields of oscar_jax.models.oscar.OscarNet)."""
    m = ml_collections.ConfigDict()
    m.cnn = "resnet50"  # fv and FG backbones: resnet50 (paper), resnet18, tiny, efficientnet_lite0
    m.freeze_cnn = False  # keep the trunks of fv and FG as initialised; train what follows
    m.code_bits = 64  # D, the hash length
    m.visual_dim = 256  # output of fv and FG
    m.width = 512  # token width of FO and FR (official release)
    m.num_layers = 6  # Transformer layers in FO and FR
    m.num_heads = 8  # attention heads
    m.mlp_dim = 1024  # Transformer feed-forward width (official release)
    m.dropout_rate = 0.1  # dropout inside the Transformers
    m.projection_dim = 256  # output of Eb, where the contrastive loss is computed
    m.use_global = True  # global stream FG
    m.use_objects = True  # object streams FO (and FR); False + use_global = CNN baseline
    m.use_visual = True  # Ev(fv(crop)) in the node features
    m.use_shape = True  # Es(Hu moments) in the node features
    m.use_geometry = True  # Eg(box geometry) in the node features
    m.use_edges = True  # relation stream FR
    m.use_frequency = False  # FF: the global view's low DCT frequencies (not in the paper)
    m.global_grid = 0  # FS: FG's last map pooled to g x g cells (0: off; not in the paper)
    m.encoder = "transformer"  # 'transformer' (paper) or 'mlp' (Table 3, H)
    m.pooling = "attention"  # 'attention' (eq. 7) or 'first' (Table 3, G)
    m.graph = "full"  # 'full' or 'thresholded' (Table 3, I)
    m.edge_distance = 0.5  # thresholded graph: connect objects nearer than this x diagonal
    return m


def get_base_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, at the paper's values; files override what differs."""
    c = ml_collections.ConfigDict()
    # Data.
    c.dataset = "psbattles24k"  # TFDS records built by preprocessing.build
    c.dataset_config = "default"  # builder config of those records
    c.data_dir = "data"  # --data_dir given to preprocessing.build
    c.train_split = "train"  # split trained on
    c.eval_split = "test"  # split the end-of-training report uses
    c.originals_per_batch = 20  # unique originals per step, over all hosts (paper: 20)
    c.variants_per_original = 2  # the original plus variants-1 manipulated versions of each
    c.views_per_variant = 2  # benign views of each (identity, variant) in a batch
    c.matched_views = False  # every variant of an original contributes the same view numbers
    c.photometric_jitter = 0.0  # online brightness/contrast/colour/noise: 0 off, 1 full ranges
    c.online_edits = 0.0  # share of originals whose manipulated slot is a fresh edit (0: off)
    c.data_workers = 4  # grain worker processes decoding JPEG (0: in the main process)
    c.synthetic_data = False  # random inputs of the real shapes instead of records
    c.synthetic = ml_collections.ConfigDict()  # shapes of synthetic inputs
    c.synthetic.max_objects = 16  # objects per image (official release)
    c.synthetic.crop_size = 224  # node crop side (official release)
    c.synthetic.global_size = 224  # global view side
    # Model.
    c.model = model_config()  # OscarNet fields
    c.compute_dtype = "float32"  # 'bfloat16' for accelerator matmuls; parameters stay float32
    c.init_from = ""  # workdir of a pretraining run whose CNN initialises fv and FG
    # With init_from: also take FF, Eb and the pretraining's fusion weights (the new streams'
    # rows start at zero), so that training starts from the pretrained model's codes.
    c.warm_start = False  # start from the init_from run's codes, not only its CNN
    c.pretrained_cnn = ""  # ImageNet weights for fv and FG: a .npz/.pth file, or 'imagenet' (Lite0)
    # Objective.
    c.hash_method = "sign"  # sign | sign_bit_balance | tanh | tanh_bit_balance | none
    c.loss = "simclr_plus"  # simclr_plus | simclr | triplet | triplet_plus | pairwise_contrastive
    c.loss_kwargs = ml_collections.ConfigDict()  # hyperparameters of the content loss
    c.loss_kwargs.temperature = 0.8  # SimCLR+ tau (official release)
    c.loss_kwargs.manipulated_weight = 1.0  # SimCLR+ weight of the manipulated negatives (eq. 11)
    c.quantization_weight = 1e-2  # alpha, weight of ||z - u||_3^3
    c.bit_balance_weight = 1e-2  # weight of the bit-balance term (its hash methods only)
    c.code_space_weight = 0.0  # weight of the same content loss on the codes u (0: off)
    c.original_not_first_weight = 0.0  # weight of losses.original_not_first on u (0: off)
    c.original_not_first_anchors_only = False  # its gradient moves the manipulated codes only
    c.original_not_first_temperature = 0.0  # its tau (0: the content loss's temperature)
    c.original_not_first_others_weight = 1.0  # database entries each other row stands for
    # Optimiser: Adam with L2 weight decay and step decay, as the official release.
    c.learning_rate = 1e-4  # initial learning rate (paper: 1e-4 main, 1e-3 pretraining)
    c.lr_decay_at = (0.6,)  # fractions of training where the learning rate drops
    c.lr_decay_factor = 0.1  # multiplier at each drop
    c.warmup_steps = 0  # linear warm-up steps (0: none, as in the paper)
    c.adam_b1 = 0.9  # Adam beta1
    c.adam_b2 = 0.98  # Adam beta2 (official release)
    c.adam_eps = 1e-9  # Adam epsilon (official release)
    c.weight_decay = 5e-4  # L2 penalty added to the gradients (official release)
    c.grad_clip_norm = 0.0  # clip the global gradient norm (0: off)
    c.contrastive_chunks = 1  # gradient caching: embed a device's batch in C chunks (1: off)
    c.total_steps = 100_000  # optimisation steps
    # Bookkeeping.
    c.seed = 0  # parameters, dropout and batch order
    c.log_every = 50  # steps between metric lines, TensorBoard points and the NaN check
    c.checkpoint_every = 1000  # steps between checkpoints
    c.keep_checkpoints = 3  # checkpoints kept on disk
    c.report_at_end = True  # write the benign-vs-manipulated separation report at the end
    # Multi-host (empty: single process; set to use jax.distributed.initialize).
    c.coordinator_address = ""  # host:port of process 0
    c.num_processes = 1  # processes in the job
    c.process_id = 0  # this process
    return c
