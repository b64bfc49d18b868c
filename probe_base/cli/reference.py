"""``probe reference build``: the backbone's domain reference (per-element FAISS indexes)
streamed from one or many feature stores into a ``.reference`` file, which ``probe fit
--reference`` takes in place of a store."""

from __future__ import annotations

from pathlib import Path


def add_reference_parser(subparsers):
    p = subparsers.add_parser(
        "reference",
        help="build the domain's reference index from the backbone's training-set stores",
    )
    verbs = p.add_subparsers(dest="reference_command", required=True)
    b = verbs.add_parser(
        "build",
        help="stream one or many stores (`probe extract --no-labels`) into a .reference file: "
        "per element exact up to --exact-max-atoms atoms, IVF-SQ above; interrupted, it resumes from "
        "<output>.partial when run again",
    )
    b.add_argument("--store", nargs="+", required=True, type=Path, help="feature stores of the training set")
    b.add_argument("--output", required=True, type=Path, help=".reference file to write")
    b.add_argument(
        "--memory-budget",
        default=None,
        help="bytes the indexes may take (e.g. 2G): above it every element keeps the same fraction "
        "of its atoms, a k-means stratified coreset (sparse cells whole, dense ones thinned)",
    )
    b.add_argument("--chunk-atoms", type=int, default=None, help="atoms read at a time (default 262144)")
    b.add_argument("--exact-max-atoms", type=int, default=None, help="exact index up to this many atoms per element")
    b.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="IVF cells scanned per query (default: tuned per element at build time to recall@5 >= 0.9)",
    )
    b.add_argument("--neighbors", type=int, default=5, help="k of the novelty's k nearest neighbours")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-progress", action="store_true", help="no progress bars")


def checkpoint_path(output) -> Path:
    """Where ``probe reference build --output X`` keeps its resumable state: ``X.partial``."""
    from probe_base.io.paths import partial_path

    return partial_path(output)


def run_reference(args):
    from probe_base.domain.index_params import CHUNK_ATOMS, EXACT_MAX_ATOMS
    from probe_base.domain.reference_build import build_reference, parse_bytes
    from probe_base.domain.reference_file import is_reference_file
    from probe_base.domain.reference_sources import StoreSource
    from probe_base.errors import OutputError
    from probe_base.io.paths import check_writable_folder, same_file

    output = Path(args.output)
    for store in args.store:
        if same_file(output, store):
            raise OutputError(f"{output}: --output is also a --store; choose another --output")
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; --output must be a file path (e.g. {output / 'train.reference'})")
    if output.exists() and not is_reference_file(output):
        raise OutputError(
            f"{output}: exists and is not a .reference file; refusing to replace it: choose another --output"
        )
    check_writable_folder(output.parent, "--output")
    budget = None if args.memory_budget is None else parse_bytes(args.memory_budget)
    source = StoreSource(args.store, args.chunk_atoms or CHUNK_ATOMS)
    checkpoint = checkpoint_path(output)
    if checkpoint.exists():
        print(f"resuming the build saved in {checkpoint}", flush=True)
    built = build_reference(
        source,
        n_neighbors=args.neighbors,
        exact_max_atoms=EXACT_MAX_ATOMS if args.exact_max_atoms is None else args.exact_max_atoms,
        memory_budget=budget,
        nprobe=args.nprobe,
        seed=args.seed,
        progress=not args.no_progress,
        checkpoint=checkpoint,
    )
    built.save(output)
    print(built.summary())
    print(
        f"wrote {output} ({source.n_atoms} atoms from {len(args.store)} store(s)); use it with `probe fit --reference`"
    )
    return 0
