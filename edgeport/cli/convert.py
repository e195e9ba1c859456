"""`edgeport convert`: PyTorch / TorchScript / torch.export / ONNX -> verified ONNX + TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeport.cli.options import given_options, options_from_model, spell_flags
from edgeport.options import validate_options
from edgeport.pipeline.state import ConvertOptions, parse_shape
from edgeport.quant.modes import QuantOptions, quant_options
from edgeport.quant.prune.options import PruneOptions, prune_options

__all__ = ["convert", "parse_shape"]


def _list_passes(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edgeport.pipeline import all_passes
    from edgeport.quant.tflm_ops import OP_REPLACEMENTS

    passes = [(kind, p.name, p.about) for kind, p in all_passes()]
    passes += [("tflm", r.name, r.about) for r in OP_REPLACEMENTS]
    width = max(len(name) for _, name, _ in passes)
    for kind, title in (
        ("pytorch", "PyTorch passes (on a copy of the loaded module)"),
        ("onnx", "ONNX passes"),
        ("tflm", "TFLite Micro op replacements (int8, w4a8, a16w8; a skip refuses a model with its op)"),
    ):
        click.echo(f"{title}, in the order they run:")
        names = [f"  {name:<{width}}  {about}" for k, name, about in passes if k == kind]
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
    "--list-passes",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_list_passes,
    help="List the passes in the order they run, and exit.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not show the stages as they run (stderr).")
@click.pass_context
def convert(
    ctx: click.Context,
    source: str,
    outdir: Path,
    quiet: bool,
    **flags: Any,
) -> None:
    """Convert SOURCE (file.py:callable, TorchScript .pt, torch.export .pt2, or .onnx) to TFLite.

    Writes model.onnx, model_float32.tflite, model_float16.tflite and edgeport.json to OUTDIR,
    after checking that PyTorch, onnxruntime and LiteRT agree on the same random inputs.
    Each stage is shown on stderr as it runs; the summary line on stdout says where the time went.
    """
    from edgeport.cli.progress import StageDisplay
    from edgeport.pipeline import convert_model
    from edgeport.quiet import silenced

    spell = spell_flags({**CONVERT_FLAGS, **QUANT_FLAGS, **PRUNE_FLAGS})
    options = validate_options(
        ConvertOptions,
        {
            **given_options(ctx, CONVERT_FLAGS),
            "source": source,
            "outdir": outdir,
            "debug": bool(ctx.obj and ctx.obj.get("debug")),
            "quantize": quant_options(given_options(ctx, QUANT_FLAGS), spell),
            "prune": prune_options(given_options(ctx, PRUNE_FLAGS), spell),
        },
        spell,
    )
    # The converters' own output is captured here, not in the library: API callers keep theirs.
    with silenced(not options.debug) as stderr:
        display = StageDisplay(stderr, enabled=not quiet)
        try:
            result = convert_model(options, display)
        finally:
            display.close()
    click.echo(result.summary())


# The flags are the options models' fields: ConvertOptions' after -o, QuantOptions' (quant/modes.py) and
# PruneOptions' (quant/prune/options.py) last.
CONVERT_FLAGS = options_from_model(ConvertOptions)
QUANT_FLAGS = options_from_model(QuantOptions)
PRUNE_FLAGS = options_from_model(PruneOptions)
convert.params[2:2] = CONVERT_FLAGS.values()
convert.params.extend(QUANT_FLAGS.values())
convert.params.extend(PRUNE_FLAGS.values())
