"""The table behind `python -m segexp.model_table`: parameters and forward GFLOPs of every
backbone / output stride at 512x512 and 20 classes, as a Markdown table (measured, not typed).

FLOPs come from TensorFlow's profiler on the frozen inference graph (segexp.perf.flops).
`replace_block` puts it between the models-table markers of a file (the command's --readme).
"""

import re

ROWS = [  # (backbone option, output stride, note)
    ("resnet50", 16, "the keras.io reference (truncated at conv4)"),
    ("mobilenetv2", 16, "light, for quick runs"),
    ("efficientnetv2_s", 16, ""),
    ("resnet50_dilated", 16, "the paper's network"),
    ("resnet50_dilated", 8, ""),
    ("resnet101_dilated", 16, "the paper's VOC setting"),
    ("resnet101_dilated", 8, ""),
    ("tiny", 16, "smoke tests and debugging (segexp's 8-conv CNN), not accuracy"),
]
START, END = "<!-- models-table:start -->", "<!-- models-table:end -->"


def measure(backbone: str, stride: int, size: int = 512, classes: int = 20) -> tuple[int, float]:
    """(parameters, forward GFLOPs for one size x size image) of DeepLabV3+ on `backbone`."""
    from segexp.config import STANDARD_RATES
    from segexp.models import backbones
    from segexp.models.deeplabv3plus import build_deeplabv3plus
    from segexp.perf.flops import forward_flops

    builder = getattr(backbones, backbone)
    model = build_deeplabv3plus(
        builder(output_stride=stride), classes, rates=STANDARD_RATES[stride]
    )
    return model.count_params(), forward_flops(model, size) / 1e9


def table() -> str:
    """The Markdown table of every row in ROWS."""
    lines = [
        "| `backbone=` | output stride | parameters | GFLOPs / image at 512 | note |",
        "|---|---|---|---|---|",
    ]
    for backbone, stride, note in ROWS:
        params, gflops = measure(backbone, stride)
        lines.append(f"| `{backbone}` | {stride} | {params:,} | {gflops:.1f} | {note} |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"error: no {START} ... {END} block to replace")
    return pattern.sub(lambda _: f"{START}\n{block}\n{END}", text)
