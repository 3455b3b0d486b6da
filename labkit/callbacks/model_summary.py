"""Lightning's model summary (rich when available) without the FLOPs column and total when nothing was counted
(:class:`ModelSummary`)."""
from __future__ import annotations

import logging


def _summary_base():
    from pytorch_lightning.callbacks import ModelSummary as _Plain

    try:  # RichModelSummary needs rich (Lightning refuses to build it without)
        from pytorch_lightning.callbacks import RichModelSummary

        RichModelSummary()
    except ModuleNotFoundError:
        return _Plain
    return RichModelSummary


def _make_summary_class():
    base = _summary_base()

    class ModelSummary(base):
        """Lightning's model summary (rich when available), without the FLOPs column and total when nothing was
        counted (tasks define no ``example_input_array``, so Lightning counts 0 FLOPs for every layer).

        Args:
            max_depth: module depth shown (0 = no summary).
            enabled: false turns it off (conf/callbacks/default.yaml follows ``trainer.enable_model_summary``).
        """

        def __init__(self, max_depth: int = 1, enabled: bool = True, **summarize_kwargs):
            super().__init__(max_depth=max_depth if enabled else 0, **summarize_kwargs)

        @staticmethod
        def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                      total_training_modes: dict[str, int], total_flops: int = 0, **summarize_kwargs) -> None:
            # Lightning's hook: called on the global-zero process with the summary's columns and totals
            flops = total_flops or 0
            data = summary_data if flops else [(name, col) for name, col in summary_data if name != "FLOPs"]
            _print_summary(data, total_parameters, trainable_parameters, model_size, total_training_modes, flops,
                           summarize_kwargs)

    return ModelSummary


def _print_summary(data, total_parameters: int, trainable_parameters: int, model_size: float,
                   modes: dict[str, int], flops: int, summarize_kwargs: dict) -> None:
    from pytorch_lightning.utilities.model_summary.model_summary import (
        get_formatted_model_size,
        get_human_readable_count,
    )

    totals = [("Trainable params", get_human_readable_count(trainable_parameters)),
              ("Non-trainable params", get_human_readable_count(total_parameters - trainable_parameters)),
              ("Total params", get_human_readable_count(total_parameters)),
              ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
              ("Modules in train mode", str(modes["train"])), ("Modules in eval mode", str(modes["eval"]))]
    if flops:
        totals.append(("Total FLOPs", get_human_readable_count(flops)))
    try:
        from rich import get_console
        from rich.table import Table
    except ImportError:
        widths = [max(len(n), *(len(str(v)) for v in col)) for n, col in data]
        lines = [" | ".join(n.ljust(w) for (n, _), w in zip(data, widths))]
        lines.append("-" * (sum(widths) + 3 * len(widths)))
        lines += [" | ".join(str(col[i]).ljust(w) for (_, col), w in zip(data, widths))
                  for i in range(len(data[0][1]))]
        lines += [f"{v:<10} {n}" for n, v in totals]
        logging.getLogger("pytorch_lightning.callbacks.model_summary").info("\n" + "\n".join(lines))
        return
    table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
    for name, _ in data:
        table.add_column(name, justify="right" if name in ("Params", "FLOPs", "Params per Device")
                         else "left", style="dim" if name == " " else None, no_wrap=name == "Name")
    for row in zip(*(col for _, col in data)):
        table.add_row(*row)
    console = get_console()
    console.print(table)
    grid = Table.grid(expand=True)
    grid.add_column()
    for n, v in totals:
        grid.add_row(f"[bold]{n}[/]: {v}")
    console.print(grid)


ModelSummary = _make_summary_class()
