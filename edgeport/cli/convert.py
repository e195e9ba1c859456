"""`edgeport convert`: PyTorch / TorchScript / torch.export / ONNX -> verified ONNX + TFLite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from edgeport.cli.options import given_options, options_from_model, spell_flags
from edgeport.errors import EdgeportError
from edgeport.quant.modes import QuantOptions

# A rank-0 input (e.g. a sample rate) has no sizes to write: any of these spells it.
SCALAR_SHAPES = ("scalar", "()", "[]", "")


def parse_shape(text: str) -> list[int]:
    if text.strip().lower() in SCALAR_SHAPES:
        return []
    try:
        dims = [int(d) for d in re.split(r"[,x]", text.strip())]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise EdgeportError(
            f"--input-shape {text!r} is not a shape", "write it as comma-separated sizes, e.g. 1,3,224,224"
        )
    return dims


def _list_passes(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edgeport.pipeline import all_passes

    passes = all_passes()
    width = max(len(p.name) for _, p in passes)
    for kind, title in (
        ("pytorch", "PyTorch passes (on a copy of the loaded module)"),
        ("onnx", "ONNX passes"),
    ):
        click.echo(f"{title}, in the order they run:")
        names = [f"  {p.name:<{width}}  {p.about}" for k, p in passes if k == kind]
        click.echo("\n".join(names) if names else "  (none)")
    ctx.exit(0)


@click.command(
    short_help="Convert a PyTorch or ONNX model to TFLite, verified against the source (and quantize it).",
    epilog="""\b
Example:
  edgeport convert examples/kws_dscnn.py:build --input-shape 1,1,49,10 --quantize int8 -o out/kws

--debug (anywhere on the command line) shows tracebacks and the converters' own logs.""",
)
@click.argument("source")
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory (refused if not empty, unless --force).",
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    help="Shape of one model input, e.g. 1,3,224,224, or 'scalar' for a rank-0 input (a sample rate); "
    "once per input in forward() order.",
)
@click.option("--input-name", "input_names", multiple=True, help="Name of one model input (same order).")
@click.option(
    "--weights", type=click.Path(path_type=Path), help="state_dict file for a file.py:callable SOURCE."
)
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset for the PyTorch export.")
@click.option("--keep-nchw", is_flag=True, help="Keep PyTorch's channels-first layout instead of NHWC.")
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="Allow loading a pickled whole-model file (runs arbitrary code from the file).",
)
@click.option(
    "--no-fold-bn", is_flag=True, help="Leave batch-norm layers unfolded (= --skip-pass fold_batch_norms)."
)
@click.option(
    "--skip-pass",
    "skip_passes",
    multiple=True,
    metavar="NAME",
    help="Do not run this PyTorch or ONNX pass (repeatable; names from --list-passes).",
)
@click.option(
    "--list-passes",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_list_passes,
    help="List the passes in the order they run, and exit.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the stages as they run (stderr).")
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.pass_context
def convert(
    ctx: click.Context,
    source: str,
    outdir: Path,
    input_shapes: tuple[str, ...],
    input_names: tuple[str, ...],
    weights: Path | None,
    opset: int,
    keep_nchw: bool,
    trust_pickle: bool,
    no_fold_bn: bool,
    skip_passes: tuple[str, ...],
    quiet: bool,
    force: bool,
    **quant_flags: Any,
) -> None:
    """Convert SOURCE (file.py:callable, TorchScript .pt, torch.export .pt2, or .onnx) to TFLite.

    Writes model.onnx, model_float32.tflite, model_float16.tflite and edgeport.json to OUTDIR,
    after checking that PyTorch, onnxruntime and LiteRT agree on the same random inputs.
    Each stage is shown on stderr as it runs; the summary line on stdout says where the time went.
    """
    from edgeport.cli.progress import StageDisplay
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.modes import quant_options
    from edgeport.quiet import silenced

    quant = quant_options(given_options(ctx, quant_flags), spell_flags(QUANT_FLAGS))
    options = ConvertOptions(
        source=source,
        outdir=outdir,
        input_shapes=[parse_shape(s) for s in input_shapes],
        input_names=list(input_names),
        weights=weights,
        opset=opset,
        keep_nchw=keep_nchw,
        trust_pickle=trust_pickle,
        force=force,
        fold_bn=not no_fold_bn,
        skip_passes=list(skip_passes),
        debug=bool(ctx.obj and ctx.obj.get("debug")),
        quantize=quant,
    )
    # The converters' own output is captured here, not in the library: API callers keep theirs.
    with silenced(not options.debug) as stderr:
        display = StageDisplay(stderr, enabled=not quiet)
        try:
            result = convert_model(options, display)
        finally:
            display.close()
    click.echo(result.summary())


# The quantization flags are QuantOptions' fields (quant/modes.py), after --force.
QUANT_FLAGS = options_from_model(QuantOptions)
convert.params[next(i for i, p in enumerate(convert.params) if p.name == "force") + 1 : 0] = (
    QUANT_FLAGS.values()
)
