"""`edgeport convert`: PyTorch / TorchScript / torch.export / ONNX -> verified ONNX + TFLite."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgeport.errors import EdgeportError

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
@click.option(
    "--quantize",
    type=click.Choice(["int8", "w8a8", "w4a8", "dynamic", "float16"]),
    help="Also write a quantized model: int8/w8a8 (full-integer, TFLite Micro), w4a8 (packed 4-bit "
    "weights, int8 activations), dynamic (int8 weights, Android CPU) or float16 (report only: "
    "model_float16.tflite is always written).",
)
@click.option(
    "--flash-budget",
    help="w4a8: largest .tflite size, e.g. 200KB (KB = 1024 bytes); the layers whose 4-bit weights "
    "cost least accuracy go to 4 bits until it fits, the rest stay 8-bit.",
)
@click.option(
    "--weight-clusters",
    type=int,
    help="int8: cluster each output channel's weights to N values and store them LUT-compressed "
    "for TFLite Micro (16 = 4-bit indices; the file needs TFLite Micro's DECODE op).",
)
@click.option(
    "--activation-ranges",
    type=click.Choice(["minmax", "percentile", "mse"]),
    default="minmax",
    show_default=True,
    help="How int8 activation ranges are set from the calibration samples.",
)
@click.option(
    "--weight-rounding",
    type=click.Choice(["squant", "nearest"]),
    default="squant",
    show_default=True,
    help="w4a8: how weights are rounded to 4 bits (squant: data-free error balancing).",
)
@click.option(
    "--io",
    "io_type",
    type=click.Choice(["int8", "float"]),
    default="int8",
    show_default=True,
    help="int8 model input/output type.",
)
@click.option(
    "--calibration", type=click.Path(path_type=Path), help="Real calibration samples (.npy, .npz or a dir)."
)
@click.option(
    "--calibration-method",
    type=click.Choice(["auto", "distill", "input-stats", "gaussian", "data"]),
    default="auto",
    show_default=True,
    help="How int8 activation ranges are calibrated (auto: data if given, else BN-statistics distillation).",
)
@click.option("--input-range", help="Range of the raw input values, lo,hi (e.g. 0,255).")
@click.option("--mean", "mean_text", help="Mean of the raw input, one value or one per channel.")
@click.option("--std", "std_text", help="Standard deviation of the raw input, one value or one per channel.")
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
    quantize: str | None,
    flash_budget: str | None,
    weight_clusters: int | None,
    activation_ranges: str,
    weight_rounding: str,
    io_type: str,
    calibration: Path | None,
    calibration_method: str,
    input_range: str | None,
    mean_text: str | None,
    std_text: str | None,
) -> None:
    """Convert SOURCE (file.py:callable, TorchScript .pt, torch.export .pt2, or .onnx) to TFLite.

    Writes model.onnx, model_float32.tflite, model_float16.tflite and edgeport.json to OUTDIR,
    after checking that PyTorch, onnxruntime and LiteRT agree on the same random inputs.
    Each stage is shown on stderr as it runs; the summary line on stdout says where the time went.
    """
    from edgeport.cli.progress import StageDisplay
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.mixed import parse_size
    from edgeport.quant.modes import QuantOptions, parse_floats
    from edgeport.quiet import silenced

    quant = None
    if quantize:
        quant = QuantOptions(
            mode=quantize,
            io=io_type,
            calibration=calibration,
            method=calibration_method,
            input_range=tuple(parse_floats(input_range, "--input-range", 2)) if input_range else None,
            mean=parse_floats(mean_text, "--mean") if mean_text else None,
            std=parse_floats(std_text, "--std") if std_text else None,
            rounding=weight_rounding,
            ranges=activation_ranges,
            weight_clusters=weight_clusters,
            flash_budget=parse_size(flash_budget) if flash_budget else None,
        )
    elif calibration or input_range or mean_text or std_text:
        raise EdgeportError("calibration options were given without --quantize", "add --quantize int8")
    else:
        # Options that only mean something with a quantized model: refused rather than ignored.
        given = [
            (flag, mode)
            for flag, mode, value in (
                ("--flash-budget", "w4a8", flash_budget),
                ("--weight-rounding", "w4a8", weight_rounding != "squant"),
                ("--weight-clusters", "int8", weight_clusters is not None),
                ("--activation-ranges", "int8", activation_ranges != "minmax"),
            )
            if value
        ]
        if given:
            flag, mode = given[0]
            raise EdgeportError(f"{flag} was given without --quantize", f"add --quantize {mode}")

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
