"""``raypose data ...``: build, merge, inspect and check keypoint data sets."""

from __future__ import annotations

import argparse

from raypose.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``raypose data`` and its sub-commands to the ``raypose`` parser."""
    data = subparsers.add_parser(
        "data", help="build, merge, inspect and check keypoint data", description="Keypoint data tools."
    )
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    commands.required = True
    _add_merge(commands)
    _add_synth(commands)
    _add_prepare(commands)
    _add_stats(commands)
    _add_show(commands)
    _add_check(commands)


def _add_merge(commands) -> None:
    p = commands.add_parser(
        "merge-foot",
        help="append CMU foot points to COCO people (17 + 6 = 23 keypoints)",
        description="Join CMU foot annotations to COCO person annotations by annotation id and write a "
        "23-keypoint COCO file (atomically).",
    )
    p.add_argument("--coco", required=True, help="COCO person_keypoints_*.json (17 keypoints)")
    p.add_argument("--foot", required=True, help="CMU person_keypoints_*_foot_v1.json (6 or 23 points)")
    p.add_argument("--out", required=True, help="output 23-keypoint annotation file")
    p.add_argument(
        "--allow-unmatched",
        action="store_true",
        help="drop foot annotations without a COCO match instead of failing",
    )
    p.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    from raypose.data.merge import merge_foot_files

    report = merge_foot_files(args.coco, args.foot, args.out, allow_unmatched=args.allow_unmatched)
    print(f"wrote {args.out}: {report.summary()}")
    return 0


def _add_synth(commands) -> None:
    p = commands.add_parser(
        "synth",
        help="write a synthetic data set in COCO + CMU foot formats",
        description="Draw articulated figures and write COCO 17-keypoint and CMU foot files plus JPEGs, "
        "then merge them to 23 keypoints (unless --no-prepare).",
    )
    p.add_argument("--out", required=True, help="output folder (annotations/, train2017/, val2017/)")
    p.add_argument("--train", type=int, default=200, help="number of training images (default 200)")
    p.add_argument("--val", type=int, default=50, help="number of validation images (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(160, 256),
        metavar=("MIN", "MAX"),
        help="range of image side lengths in pixels (default 160 256)",
    )
    p.add_argument("--no-prepare", action="store_true", help="do not merge to 23-keypoint files afterwards")
    p.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from raypose.data.synth import generate_synthetic_dataset, prepare_dataset
    from raypose.io import check_output_dir

    check_output_dir(args.out)

    layout = generate_synthetic_dataset(args.out, args.train, args.val, args.seed, tuple(args.size))
    for split in ("train", "val"):
        print(
            f"{split}: {layout.num_images[split]} images, {layout.num_people[split]} people -> {layout.images(split)}"
        )
    if not args.no_prepare:
        for split, path in prepare_dataset(args.out).items():
            print(f"{split}: merged 23-keypoint annotations -> {path}")
    return 0


def _add_prepare(commands) -> None:
    p = commands.add_parser(
        "prepare",
        help="merge COCO + CMU foot files of every split under a root",
        description="Merge ROOT/annotations/person_keypoints_{split}2017.json with "
        "person_keypoints_{split}2017_foot_v1.json into person_keypoints_{split}2017_foot23.json.",
    )
    p.add_argument("--root", required=True, help="data root holding annotations/")
    p.add_argument(
        "--allow-unmatched", action="store_true", help="drop foot annotations without a COCO match"
    )
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from raypose.data.synth import prepare_dataset

    for split, path in prepare_dataset(args.root, allow_unmatched=args.allow_unmatched).items():
        print(f"{split}: {path}")
    return 0


def _add_stats(commands) -> None:
    p = commands.add_parser(
        "stats",
        help="summary statistics and plots of an annotation file",
        description="Images, people, people per image, per-keypoint labelled/visible fractions and box "
        "sizes, as PNG plots and summary.json.",
    )
    p.add_argument("annotations", metavar="ANN.json", help="COCO keypoint annotation file")
    p.add_argument("--out", required=True, help="output folder for summary.json and the plots")
    p.set_defaults(func=_stats)


def _stats(args: argparse.Namespace) -> int:
    from raypose.data.eda import STATS_FILES, write_stats
    from raypose.io import check_output_dir

    check_output_dir(args.out, inputs=(args.annotations,), writes=STATS_FILES)

    summary = write_stats(args.annotations, args.out)
    print(
        f"{summary['images']} images, {summary['people']} people "
        f"({summary['people_with_keypoints']} with keypoints, {summary['crowd_regions']} crowd regions), "
        f"{summary['people_per_image']['mean']} people per image"
    )
    print(f"wrote {args.out}/summary.json and {', '.join(summary['plots'])}")
    return 0


def _add_show(commands) -> None:
    p = commands.add_parser(
        "show",
        help="draw skeletons on images after the training augmentations",
        description="Write PNGs of images with boxes and skeletons, as the model sees them in training.",
    )
    p.add_argument("annotations", metavar="ANN.json", help="COCO keypoint annotation file")
    p.add_argument("images", metavar="IMAGES", help="folder holding the images")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument("--num", type=int, default=16, help="number of images, at least 1 (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed for the image choice and augmentations")
    p.add_argument("--no-augment", action="store_true", help="show the raw labels, without augmentation")
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from raypose.data.eda import SAMPLE_FILES, write_samples
    from raypose.io import check_output_dir

    if args.num < 1:
        raise ConfigError(f"--num must be at least 1 (the number of images to draw), got {args.num}")
    check_output_dir(args.out, inputs=(args.annotations, args.images), writes=SAMPLE_FILES)

    paths = write_samples(args.annotations, args.images, args.out, args.num, args.seed, not args.no_augment)
    print(f"wrote {len(paths)} images to {args.out}")
    return 0


def _add_check(commands) -> None:
    p = commands.add_parser(
        "check",
        help="report label problems in an annotation file",
        description="Report missing labels, keypoints outside their box or image, bad visibility values, "
        "zero-area boxes and malformed entries. Exits 1 if any error is found.",
    )
    p.add_argument("annotations", metavar="ANN.json", help="COCO keypoint annotation file")
    p.add_argument("--images", help="also check that every image file exists in this folder")
    p.add_argument("--out", help="write the full report as JSON here")
    p.add_argument("--show", type=int, default=20, help="number of issues to print (default 20)")
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from raypose.data.eda import check_annotations
    from raypose.io import check_output_file, write_json_atomic

    if args.out:
        check_output_file(args.out, inputs=(args.annotations,))
    report = check_annotations(args.annotations, args.images)
    print(f"{args.annotations}: {report.images} images, {report.people} annotations")
    for kind, count in report.counts().items():
        print(f"  {count:7d}  {kind}")
    for issue in report.issues[: max(0, args.show)]:
        print(f"  {issue.severity}: {issue.location}: {issue.kind}: {issue.message}")
    if args.out:
        write_json_atomic(args.out, report.to_dict(), indent=1)
    if report.errors:
        print(f"{len(report.errors)} errors")
        return 1
    print("no errors" + (f" ({len(report.issues)} warnings)" if report.issues else ""))
    return 0
