"""``midbench import mid-official``: turn the MID authors' released MNIST files into midbench checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded

import_app = typer.Typer(no_args_is_help=True, help="Import checkpoints released by other projects.")


@import_app.command("mid-official")
@guarded
def mid_official_command(
    source: Annotated[Path, typer.Option(help="The release's source model, MNIST_LeNet5.pkl.")],
    teacher: Annotated[Path, typer.Option(help="The release's teacher autoencoder, LeNet5_MNIST_AE.pkl.")],
    student: Annotated[Path, typer.Option(help="The release's MID student encoder, encoder_adv_addclean_MNIST_cls_simi_cyc217.pkl.")],
    out: Annotated[Path, typer.Option(help="Output directory for the imported checkpoints.")],
) -> None:
    """Import the MID release's MNIST models (legacy PyTorch 0.4 pickles, read without running their code).

    Writes the source model, the teacher autoencoder (method mid-teacher) and the MID classifier (student encoder + teacher head, with the teacher encoder and decoder stored beside them for `midbench regenerate`) as midbench checkpoints to --out.

    Example: midbench import mid-official --source MNIST_LeNet5.pkl --teacher LeNet5_MNIST_AE.pkl --student encoder_adv_addclean_MNIST_cls_simi_cyc217.pkl --out runs/mid-official
    """
    import sys
    import warnings

    from midbench.mid.official import MidOfficialWarning, import_mid_official

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MidOfficialWarning)
        paths = import_mid_official(source, teacher, student, out)
    # A SHA-256 mismatch does not stop the import, but the user must see it as one plain line.
    for warning in caught:
        print(f"midbench: warning: {warning.message}", file=sys.stderr)
    # Plain print: a console would wrap long paths, and these lines are meant to be copied.
    print(f"source model: {paths['source']}")
    print(f"MID model: {paths['mid']}")
    print(f"teacher (encoder, decoder, head): {paths['teacher']}")
