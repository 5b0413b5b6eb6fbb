r"""Table 2 of the paper: content losses, hash losses and code lengths, one run each.

    python -m oscar_jax.train --config configs/ablations/table2.py:loss=triplet_plus \
        --workdir runs/table2/triplet_plus --config.init_from=runs/pretrain
    python -m oscar_jax.train --config configs/ablations/table2.py:hash=tanh_bit_balance \
        --workdir runs/table2/tanh_bit_balance --config.init_from=runs/pretrain
    python -m oscar_jax.train --config configs/ablations/table2.py:bits=128 \
        --workdir runs/table2/bits128 --config.init_from=runs/pretrain

loss: simclr_plus (the paper's), simclr (NT-Xent: manipulated versions are ordinary
negatives, their benign views are not positives), triplet, triplet_plus,
pairwise_contrastive. hash: sign (the paper's), sign_bit_balance, tanh, tanh_bit_balance,
none. bits: the code length D (Fig. 3c: 16 to 256). Add `runlocal` to check one on a CPU.
"""

import ml_collections

from configs import common, full

# Hyperparameters of each content loss (oscar_jax.losses); SimCLR keeps manipulated versions
# as plain negatives, which is what separates it from SimCLR+ with two views per image.
LOSS_KWARGS = {
    "simclr_plus": {"temperature": 0.8},
    "simclr": {"temperature": 0.8, "manipulated_negatives": False},
    "triplet": {"margin": 0.2},
    "triplet_plus": {"margin": 0.2},
    "pairwise_contrastive": {"margin": 0.5},
}
HASHES = ("sign", "sign_bit_balance", "tanh", "tanh_bit_balance", "none")
BITS = (16, 32, 64, 128, 256)


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, loss="simclr_plus", hash="sign", bits=64, runlocal=False)
    if args.loss not in LOSS_KWARGS:
        raise ValueError(f"loss={args.loss}: choose one of {sorted(LOSS_KWARGS)}")
    if args.hash not in HASHES:
        raise ValueError(f"hash={args.hash}: choose one of {HASHES}")
    if args.bits not in BITS:
        raise ValueError(f"bits={args.bits}: choose one of {BITS}")
    config = full.get_config("runlocal" if args.runlocal else None)
    config.loss = args.loss  # the content loss under test
    config.loss_kwargs = ml_collections.ConfigDict(LOSS_KWARGS[args.loss])  # its settings
    config.hash_method = args.hash  # the hash relaxation under test
    config.model.code_bits = args.bits  # the code length under test
    return config
