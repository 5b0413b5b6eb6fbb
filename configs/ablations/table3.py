r"""Table 3 of the paper: architecture ablations A to J, one run each.

    python -m oscar_jax.train --config configs/ablations/table3.py:A --workdir runs/table3/A
    python -m oscar_jax.train --config configs/ablations/table3.py:E --workdir runs/table3/E \
        --config.init_from=runs/pretrain

A: object visual features only (FO, no pretraining); B: A with fv pretrained (pass
--config.init_from); C: B + geometry g_i; D: C + shape s_i; E: D + relation stream FR with
edge features; F: single CNN on the whole image; G: J with first-token pooling instead of
attention (eq. 7); H: J with MLP layers instead of Transformers (the GNN baseline); I: J on a
thresholded graph instead of a fully connected one; J: the full OSCAR-Net. Experiments B to
J start from the pretrained CNN, as in the paper; A must not. Add `,runlocal` to check one on
a CPU.
"""

from configs import common, full

EXPERIMENTS = "ABCDEFGHIJ"


def get_config(arg: str | None = None):
    experiment, _, rest = (arg or "J").partition(",")
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment {experiment!r}: choose one of {list(EXPERIMENTS)}")
    args = common.parse_arg(rest, runlocal=False)
    config = full.get_config("runlocal" if args.runlocal else None)
    m = config.model
    if experiment in "ABCDE":
        m.use_global = False  # no global CNN FG in A to E
        m.use_geometry = experiment in "CDE"  # g_i from C on
        m.use_shape = experiment in "DE"  # s_i from D on
        m.use_edges = experiment == "E"  # FR from E on
    elif experiment == "F":
        m.use_objects = False  # the single-CNN baseline
    elif experiment == "G":
        m.pooling = "first"  # first token instead of attention pooling
    elif experiment == "H":
        m.encoder = "mlp"  # MLP layers instead of Transformers (GNN)
    elif experiment == "I":
        m.graph = "thresholded"  # edges only between nearby or overlapping objects
    return config
